# Placeholder reserved for the on-demand issuance work; its operations are added by hand so that
# parallel work on this app keeps one linear migration graph.
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('tenancy', '0001_initial'),
    ]

    operations = [
    ]
