"""Seed data for the browser tests (run with `manage.py shell < seed.py`-style exec)."""
import datetime as dt

from django.contrib.auth import get_user_model
from django.utils import timezone

from controlplane.health.models import HealthTransition
from controlplane.proxy import services
from controlplane.publishing.models import Node
from controlplane.tenancy.models import Membership
from tests.controlplane import helpers as h

PASSWORD = "browser-test-password"
User = get_user_model()
User.objects.create_superuser("admin", "admin@example.com", PASSWORD)
shop, acme = h.tenant("shop"), h.tenant("acme")
for tenant in (shop, acme):
    user = User.objects.create_user(f"{tenant.slug}-editor", password=PASSWORD)
    Membership.objects.create(user=user, tenant=tenant, role="editor")
    pool = h.pool(f"{tenant.slug}-pool", tenant)
    h.route(f"{tenant.slug}-api", tenant, pool_obj=pool)
    h.certificate(f"{tenant.slug}-cert", tenant, names=(f"{tenant.slug}.example.com", f"*.{tenant.slug}.example.com"))
platform_pool = h.pool("demo-pool", targets=[{"host": "127.0.0.1", "port": 9000}, {"host": "127.0.0.1", "port": 9001}],
                       health_check_enabled=True)
h.route("demo", hosts=["demo.localhost"], pool_obj=platform_pool)
target = platform_pool.targets.order_by("port").last()
target.healthy, target.health_reason = False, "connection refused"
target.save()
# certificates expiring at different times, for the expiry timeline
for days, name in ((5, "legacy"), (21, "www"), (80, "api"), (300, "static")):
    leaf = h.ca().issue_cert(f"{name}.localhost", not_after=timezone.now() + dt.timedelta(days=days))
    chain = "".join(p.bytes().decode() for p in leaf.cert_chain_pems)
    services.create_certificate(h.ACTOR, name=f"{name}-cert", certificate_pem=chain,
                                private_key_pem=leaf.private_key_pem.bytes().decode())
now = timezone.now()
for hours, healthy, reason in ((20, False, "timeout after 2.0 s"), (19, True, "status 200"),
                               (3, False, "connection refused")):
    HealthTransition.objects.create(target=target, pool=platform_pool, target_address=f"127.0.0.1:{target.port}",
                                    healthy=healthy, reason=reason, created=now - dt.timedelta(hours=hours))
target.health_changed = now - dt.timedelta(hours=3)
target.save()
node, _ = Node.register("edge-1")
Node.objects.filter(pk=node.pk).update(connected=True, applied_version=2, software_version="switchyard-dp 1.0")
print("seeded")

# an hour of traffic on the demo route, for the charts (when telemetry is installed)
try:
    from controlplane.telemetry.models import TrafficMinute
    from dataplane import schema
except ImportError:
    TrafficMinute = None
if TrafficMinute is not None:
    from controlplane.proxy.models import Route
    demo = Route.objects.get(name="demo")
    start = timezone.now().replace(second=0, microsecond=0)
    for i in range(60):
        requests = 3000 + 40 * ((i * 7) % 23)
        errors = {"connection_refused": (i % 9) * 4, "http_response_timeout": (i % 13) * 2}
        latency = [0] * schema.STATS_BUCKET_SLOTS
        for slot, share in ((2, 0.5), (4, 0.35), (6, 0.12), (8, 0.03)):
            latency[min(slot + (i % 3 == 0), schema.STATS_BUCKET_SLOTS - 1)] += int(requests * share)
        TrafficMinute.objects.create(
            minute=start - dt.timedelta(minutes=59 - i), route=demo, tenant=None, requests=requests,
            status_2xx=requests - sum(errors.values()), status_5xx=sum(errors.values()),
            by_proxy_status=errors, latency=latency, upstream_latency=latency)
