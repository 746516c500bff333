# Forward auth (issue 17): the route's forward_auth.
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('proxy', '0005_basic_auth'),
    ]

    operations = [
        migrations.AddField(
            model_name='route',
            name='forward_auth',
            field=models.JSONField(blank=True, default=None, help_text='Ask an auth service before forwarding: {"url": "https://auth.example.com/api/authz/forward-auth", "response_headers": ["Remote-User"], "timeout": 5}; empty: no forward auth.', null=True),
        ),
    ]
