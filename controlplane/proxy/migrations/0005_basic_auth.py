# Basic auth (issue 17): access-list users (PBKDF2 hashes) and satisfy, the route's
# forward_authorization.
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('proxy', '0004_access_lists_maintenance'),
    ]

    operations = [
        migrations.AddField(
            model_name='accesslist',
            name='satisfy',
            field=models.CharField(choices=[('all', 'all'), ('any', 'any')], default='all', help_text='With users: all = the rules and a password; any = either.', max_length=3),
        ),
        migrations.AddField(
            model_name='accesslist',
            name='users',
            field=models.JSONField(blank=True, default=list, help_text='Basic-auth users: [{"username", "password_hash"}] (PBKDF2-HMAC-SHA256).'),
        ),
        migrations.AddField(
            model_name='route',
            name='forward_authorization',
            field=models.BooleanField(default=False, help_text="Basic auth: pass the client's Authorization header to the upstream."),
        ),
    ]
