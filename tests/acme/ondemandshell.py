"""``tests/acme/acmeshell.py`` plus the on-demand TLS operations of the end-to-end test
(tests/e2e/test_acme_on_demand.py), run as its own process with the stack's environment."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.acme import acmeshell  # noqa: F401 - registers its operations
from tests.e2e import cpshell
from tests.e2e.cpshell import op


@op
def on_demand_tenant(slug, suffix, port, on_demand=True, max_certificates=20, max_per_hour=20, challenge=""):
    """A tenant with the delegation ``suffix`` (on-demand TLS as asked), a pool on the
    loopback upstream and a route for ``*.<suffix>``; returns the delegation's id."""
    from controlplane.proxy import services
    from controlplane.tenancy.models import Tenant

    actor = services.Actor.system()
    tenant = Tenant.objects.filter(slug=slug).first() or services.create_tenant(
        actor, slug=slug, name=slug, allowed_networks=["127.0.0.0/8"])
    delegation = services.create_delegation(actor, tenant, suffix)
    pool = services.create_pool(actor, tenant=tenant, name=f"pool-{suffix}", targets=[{"host": "127.0.0.1",
                                                                                          "port": port}])
    services.create_route(actor, tenant=tenant, name=f"route-{suffix}", hosts=[f"*.{suffix}"], pool=pool,
                          acme_challenge=challenge, note="e2e: on-demand TLS")
    services.update_delegation_on_demand(actor, delegation, on_demand_tls=on_demand,
                                         on_demand_max_certificates=max_certificates,
                                         on_demand_max_per_hour=max_per_hour)
    return delegation.pk


@op
def on_demand_orders():
    """Every on-demand order: host -> state."""
    from controlplane.acme.models import Order

    return dict(Order.objects.filter(on_demand=True).values_list("host", "state"))


@op
def on_demand_challenge(host):
    from controlplane.acme.models import Order

    return Order.objects.get(on_demand=True, host=host).challenge


@op
def on_demand_state(delegation_id):
    from controlplane.acme import ondemand
    from controlplane.tenancy.models import Delegation

    state = ondemand.state_of(Delegation.objects.get(pk=delegation_id))
    state["refusals"] = [{"name": r["name"], "reason": r["reason"]} for r in state["refusals"]]
    return state


if __name__ == "__main__":
    cpshell.main()
