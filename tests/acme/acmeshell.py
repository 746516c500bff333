"""``tests/e2e/cpshell.py`` plus the ACME operations of the end-to-end test, run as its
own process with the stack's environment (one JSON request per line, as cpshell)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e import cpshell
from tests.e2e.cpshell import op


@op
def create_acme_site(name, host, port):
    """A pool and a route for ``host`` that asks for an automatic certificate; returns its id."""
    from controlplane.proxy import services

    actor = services.Actor.system()
    pool = services.create_pool(actor, name=f"pool-{name}", targets=[{"host": "127.0.0.1", "port": port}])
    route = services.create_route(actor, name=f"route-{name}", hosts=[host], pool=pool, acme=True,
                                  note=f"e2e: ACME route {name}")
    return route.pk


@op
def acme_status(route_id):
    from controlplane.acme import services
    from controlplane.proxy.models import Route

    return services.status(Route.objects.get(pk=route_id))


if __name__ == "__main__":
    cpshell.main()
