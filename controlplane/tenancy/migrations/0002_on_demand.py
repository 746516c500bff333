# On-demand TLS per delegation (controlplane.acme.ondemand); written by hand so that
# parallel work on this app keeps one linear migration graph.
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tenancy', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='delegation',
            name='on_demand_max_certificates',
            field=models.PositiveIntegerField(default=20, help_text='At most this many on-demand certificates (orders) below this suffix.'),
        ),
        migrations.AddField(
            model_name='delegation',
            name='on_demand_max_per_hour',
            field=models.PositiveIntegerField(default=5, help_text='At most this many new on-demand orders below this suffix per hour.'),
        ),
        migrations.AddField(
            model_name='delegation',
            name='on_demand_tls',
            field=models.BooleanField(default=False, help_text='Order a certificate for a new name below this suffix on its first TLS handshake.'),
        ),
    ]
