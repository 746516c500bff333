"""On-demand TLS in the API: staff switch it on per delegation with its limits; the
delegation shows how it stands (orders used, refusals with reasons); a tenant's own
owner can read it but never change it."""
import pytest

from controlplane.acme import ondemand
from controlplane.audit.models import AuditEntry
from controlplane.proxy import services
from tests.controlplane.helpers import ACTOR

pytestmark = pytest.mark.django_db
BASE = "/api/v1"


def test_staff_switch_on_demand_on_and_everyone_of_the_tenant_sees_its_state(staff_api, as_role, world, settings):
    settings.SWITCHYARD_ACME_DIRECTORY = "https://ca.invalid/dir"
    d = world["a"].delegation
    r = staff_api.patch(f"{BASE}/delegations/{d.pk}/", {"on_demand_tls": True, "on_demand_max_certificates": 0,
                                                         "on_demand_max_per_hour": 3}, format="json")
    assert r.status_code == 200, r.content
    body = r.json()
    assert (body["on_demand_tls"], body["on_demand_max_certificates"], body["on_demand_max_per_hour"]) == (True, 0, 3)
    assert body["suffix"] == "alpha.example.com" and body["on_demand"]["used"] == 0
    assert AuditEntry.objects.filter(object_type__icontains="delegation", action="update").exists()
    services.create_route(ACTOR, tenant=world["a"].tenant, name="wild", hosts=["*.apps.alpha.example.com"],
                          pool=world["a"].pool)
    assert ondemand.consider("x.apps.alpha.example.com").outcome == ondemand.REFUSED  # quota 0
    owner = as_role("owner")
    got = owner.get(f"{BASE}/delegations/{d.pk}/").json()["on_demand"]
    assert [(x["name"], x["reason"][:6]) for x in got["refusals"]] == [("x.apps.alpha.example.com", "quota:")]
    assert owner.patch(f"{BASE}/delegations/{d.pk}/", {"on_demand_tls": False}, format="json").status_code == 403
    assert staff_api.patch(f"{BASE}/delegations/{d.pk}/", {"on_demand_max_per_hour": -1},
                           format="json").status_code == 400
    assert staff_api.patch(f"{BASE}/delegations/{d.pk}/", {"on_demand_tls": "yes"}, format="json").status_code == 400
    beta_owner = as_role("owner", "b")
    assert beta_owner.get(f"{BASE}/delegations/{d.pk}/").status_code == 404
