"""``tests/e2e/cpshell.py`` plus the ACME operations of the end-to-end test, run as its
own process with the stack's environment (one JSON request per line, as cpshell)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e import cpshell
from tests.e2e.cpshell import op


@op
def create_acme_site(name, host, port, challenge=""):
    """A pool and a route for ``host`` that asks for an automatic certificate (with the
    challenge ``challenge``, "" for the default); returns its id."""
    from controlplane.proxy import services

    actor = services.Actor.system()
    pool = services.create_pool(actor, name=f"pool-{name}", targets=[{"host": "127.0.0.1", "port": port}])
    route = services.create_route(actor, name=f"route-{name}", hosts=[host], pool=pool, acme=True,
                                  acme_challenge=challenge, note=f"e2e: ACME route {name}")
    return route.pk


@op
def force_renewal(route_id):
    """Time travel in the renewal decision: the route's order (issued: its renewal; failed:
    its retry) is due now; queue it."""
    from django.utils import timezone

    from controlplane.acme import tasks
    from controlplane.acme.models import Order

    order = Order.objects.get(route_id=route_id)
    now = timezone.now()
    Order.objects.filter(pk=order.pk).update(renew_at=now, next_retry=now)
    tasks.queue(order.pk)
    return order.certificate_id


@op
def set_acme(route_id, acme):
    from controlplane.proxy import services
    from controlplane.proxy.models import Route

    services.update_route(services.Actor.system(), Route.objects.get(pk=route_id), acme=acme, note="e2e")
    return True


@op
def acme_status(route_id):
    from controlplane.acme import services
    from controlplane.proxy.models import Route

    return services.status(Route.objects.get(pk=route_id))


@op
def route_page(route_id):
    """The route's dashboard page as a platform operator sees it (the real view and template)."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(username="acme-e2e-operator",
                                                     defaults={"is_staff": True, "is_superuser": True})
    from django.conf import settings

    allowed = next((h for h in settings.ALLOWED_HOSTS if h not in ("*",) and not h.startswith(".")), "localhost")
    client = Client(HTTP_HOST=allowed)
    client.force_login(user)
    response = client.get(f"/routes/{route_id}/")
    return {"status": response.status_code, "html": response.content.decode()}


if __name__ == "__main__":
    cpshell.main()
