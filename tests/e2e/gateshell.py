"""cpshell (``tests/e2e/cpshell.py``) plus the two operations of the gate property test
(``test_gate_property.py``), run as its own process against the stack's database.

    {"op": "gate_setup"}         -> for platform staff and for a tenant editor: a token,
                                    the baseline route and pool (ids), the suffix of
                                    their hosts and an address their targets may use
    {"op": "gate_materialized"}  -> the latest version, its snapshot with the private
                                    keys filled in: exactly what a node is pushed
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e import cpshell
from tests.e2e.cpshell import op

TENANT = "gate"
TENANT_SUFFIX = "gate.example.com"
PLATFORM_SUFFIX = "gate.platform.test"
PUBLIC_IP = "93.184.216.34"  # a global address: allowed for tenant targets
QUOTA = 10_000  # the examples never hit a quota by accident


@op
def gate_setup():
    from django.contrib.auth import get_user_model

    from controlplane.proxy import services
    from controlplane.tenancy import services as tenancy

    actor = services.Actor.system()
    User = get_user_model()
    tenant = services.create_tenant(actor, slug=TENANT, name="Gate", max_routes=QUOTA, max_pools=QUOTA,
                                    max_targets=QUOTA, max_certificates=QUOTA)
    services.create_delegation(actor, tenant, TENANT_SUFFIX)
    staff = User.objects.create_user("gate-staff", is_staff=True)
    editor = User.objects.create_user("gate-editor")
    tenancy.add_member(actor, tenant, editor.get_username(), "editor")
    _, staff_token = tenancy.issue_token(actor, staff, name="gate staff")
    _, editor_token = tenancy.issue_token(actor, editor, name="gate editor")
    platform_pool = services.create_pool(actor, name="gate-platform", targets=[{"host": "127.0.0.1", "port": 9}])
    tenant_pool = services.create_pool(actor, tenant=tenant, name="gate-tenant",
                                       targets=[{"host": PUBLIC_IP, "port": 8080}])
    platform_route = services.create_route(actor, name="gate-platform", hosts=[f"www.{PLATFORM_SUFFIX}"],
                                           pool=platform_pool)
    tenant_route = services.create_route(actor, tenant=tenant, name="gate-tenant", hosts=[f"www.{TENANT_SUFFIX}"],
                                         pool=tenant_pool)
    return {
        "staff": {"token": staff_token, "route": platform_route.pk, "pool": platform_pool.pk,
                  "suffix": PLATFORM_SUFFIX, "target": "127.0.0.1"},
        "editor": {"token": editor_token, "route": tenant_route.pk, "pool": tenant_pool.pk,
                   "suffix": TENANT_SUFFIX, "target": PUBLIC_IP},
    }


@op
def gate_materialized():
    from controlplane.publishing import compiler, publisher

    version = publisher.current_version()
    return {"version": version.number, "hash": version.sha256,
            "snapshot": compiler.materialize(version.snapshot)}


if __name__ == "__main__":
    cpshell.main()
