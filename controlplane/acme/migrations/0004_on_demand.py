# On-demand orders and their refusals (controlplane.acme.ondemand), TLS-ALPN-01 keys encrypted
# at rest; written by hand so that
# parallel work on this app keeps one linear migration graph.
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('acme', '0003_order_challenge_order_profile'),
        ('proxy', '0001_initial'),
        ('tenancy', '0002_on_demand'),
    ]

    operations = [
        migrations.AddField(
            model_name='order',
            name='delegation',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='on_demand_orders', to='tenancy.delegation'),
        ),
        migrations.AddField(
            model_name='order',
            name='host',
            field=models.CharField(blank=True, db_index=True, help_text="The on-demand order's name.", max_length=253),
        ),
        migrations.AddField(
            model_name='order',
            name='on_demand',
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name='order',
            name='requested',
            field=models.DateTimeField(blank=True, help_text='When the on-demand order was made.', null=True),
        ),
        migrations.AddField(
            model_name='order',
            name='via_route',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='on_demand_orders', to='proxy.route'),
        ),
        migrations.AlterField(
            model_name='order',
            name='route',
            field=models.OneToOneField(blank=True, help_text='The route that asks; empty for an on-demand order.', null=True, on_delete=django.db.models.deletion.CASCADE, related_name='acme_order', to='proxy.route'),
        ),
        # TLS-ALPN-01 validation keys encrypted at rest (a pending challenge's plaintext key is dropped:
        # its order fails once and is retried).
        migrations.RemoveField(
            model_name='challenge',
            name='private_key_pem',
        ),
        migrations.AddField(
            model_name='challenge',
            name='private_key_encrypted',
            field=models.TextField(blank=True, editable=False),
        ),
        migrations.CreateModel(
            name='OnDemandRefusal',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=253)),
                ('reason', models.CharField(max_length=300)),
                ('count', models.PositiveIntegerField(default=1)),
                ('last', models.DateTimeField()),
                ('delegation', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='on_demand_refusals', to='tenancy.delegation')),
            ],
            options={
                'ordering': ['-last', '-id'],
                'constraints': [models.UniqueConstraint(fields=('delegation', 'name'), name='acme_ondemand_refusal_name')],
            },
        ),
    ]
