# Rate limits (issue 17).
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tenancy', '0002_on_demand'),
    ]

    operations = [
        migrations.AddField(
            model_name='tenant',
            name='rate_limit',
            field=models.JSONField(blank=True, default=None, help_text='Requests per second over all the tenant\'s routes together, held across nodes: {"rate", "burst", "key", "header"} as on a route; empty: no limit.', null=True),
        ),
    ]
