# Error pages (issue 17): the platform default pages and a route's own pages; and the
# route's own basic_auth users.
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('proxy', '0007_rate_limits'),
    ]

    operations = [
        migrations.CreateModel(
            name='ErrorPage',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('status', models.PositiveSmallIntegerField(choices=[(403, '403'), (404, '404'), (429, '429'), (502, '502'), (503, '503'), (504, '504')], unique=True)),
                ('body', models.TextField(help_text='HTML with {{request_id}}, {{status}}, {{reason}}, {{error}}, {{details}}.')),
                ('created', models.DateTimeField(auto_now_add=True)),
                ('updated', models.DateTimeField(auto_now=True)),
            ],
            options={
                'ordering': ['status'],
            },
        ),
        migrations.AddField(
            model_name='route',
            name='error_pages',
            field=models.JSONField(blank=True, default=dict, help_text='This route\'s own error pages: {"503": "<html>…"} for 403, 429, 502, 503, 504 (over the platform defaults).'),
        ),
        # basic auth on a route (issue 17)
        migrations.AddField(
            model_name='route',
            name='basic_auth',
            field=models.JSONField(blank=True, default=None, help_text='Basic auth: {"realm": "…" (empty: the route\'s name), "users": [{"username", "password_hash"}]} (PBKDF2-HMAC-SHA256); empty: off. An access list\'s users apply too.', null=True),
        ),
    ]
