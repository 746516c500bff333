# Rate limits (issue 17).
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('proxy', '0006_forward_auth'),
    ]

    operations = [
        migrations.AddField(
            model_name='route',
            name='rate_limit',
            field=models.JSONField(blank=True, default=None, help_text='Requests per second held across all nodes: {"rate": 100, "burst": 20, "key": "none" | "client_ip" | "header", "header": "X-Api-Key"}; empty: no limit.', null=True),
        ),
    ]
