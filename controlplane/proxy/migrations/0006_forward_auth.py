# Placeholder reserved for the forward auth work; its operations are added by hand so that
# parallel work on this app keeps one linear migration graph.
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('proxy', '0005_basic_auth'),
    ]

    operations = [
    ]
