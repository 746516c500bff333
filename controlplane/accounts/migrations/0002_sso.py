# Placeholder reserved for the single sign-on work; its operations are added by hand so that
# parallel work on this app keeps one linear migration graph.
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0001_initial'),
    ]

    operations = [
    ]
