"""The route and tenant field rate_limit through /api/v1/: normalised, bounded (400
naming the field, nothing changed), compiled into the snapshot, audited; a tenant's
own limit is platform staff's; another tenant's route is a 404; the node's fallback
shows in nodes/; the OpenAPI schema describes it all."""
import pytest

from controlplane.audit.models import AuditEntry
from controlplane.publishing import ratelimits
from controlplane.publishing.models import ConfigVersion, NodeEvent

from .conftest import client_for

pytestmark = pytest.mark.django_db

BASE = "/api/v1"


def test_an_editor_limits_a_route_and_the_nodes_get_it(world, as_role):
    api = as_role("editor")
    route = world["a"].route
    resp = api.patch(f"{BASE}/routes/{route.pk}/", {"rate_limit": {"rate": 50, "key": "client_ip"}}, format="json")
    assert resp.status_code == 200, resp.json()
    assert resp.json()["rate_limit"] == {"rate": 50.0, "burst": 50, "key": "client_ip", "header": ""}
    snap = ConfigVersion.objects.latest("number").snapshot
    [compiled] = [r for r in snap["routes"] if r["id"] == route.pk]
    assert compiled["rate_limit"] == {"rate": 50.0, "burst": 50, "key": "client_ip", "header": ""}
    assert AuditEntry.objects.filter(object_type="route", object_id=str(route.pk),
                                     after__rate_limit__rate=50.0).exists()
    resp = api.patch(f"{BASE}/routes/{route.pk}/", {"rate_limit": {"rate": 5, "burst": 10, "header": "X-Api-Key"}},
                     format="json")
    assert resp.json()["rate_limit"] == {"rate": 5.0, "burst": 10, "key": "header", "header": "X-Api-Key"}
    resp = api.patch(f"{BASE}/routes/{route.pk}/", {"rate_limit": None}, format="json")
    assert resp.status_code == 200 and resp.json()["rate_limit"] is None
    assert "rate_limit" not in [r for r in ConfigVersion.objects.latest("number").snapshot["routes"]
                                if r["id"] == route.pk][0]


@pytest.mark.parametrize("value, words", [
    ({"rate": 0}, "rate"),
    ({"rate": 10, "burst": 0}, "burst"),
    ({"rate": 10, "key": "cookie"}, "key"),
    ({"rate": 10, "key": "header", "header": "X Bad"}, "header"),
    ({"rate": 10, "key": "header"}, "header"),
    ({"rate": "10"}, "rate"),
    ({"burst": 3}, "rate"),
])
def test_a_bad_limit_is_a_400_naming_the_field_and_changes_nothing(world, as_role, value, words):
    api = as_role("editor")
    route = world["a"].route
    before = ConfigVersion.objects.latest("number").number
    resp = api.patch(f"{BASE}/routes/{route.pk}/", {"rate_limit": value}, format="json")
    assert resp.status_code == 400, resp.json()
    assert "rate_limit" in resp.json()
    assert words in str(resp.json()["rate_limit"])
    route.refresh_from_db()
    assert route.rate_limit is None and ConfigVersion.objects.latest("number").number == before


def test_another_tenants_route_is_a_404(world, as_role):
    resp = as_role("editor").patch(f"{BASE}/routes/{world['b'].route.pk}/", {"rate_limit": {"rate": 1}},
                                   format="json")
    assert resp.status_code == 404
    world["b"].route.refresh_from_db()
    assert world["b"].route.rate_limit is None


def test_a_tenants_limit_is_set_by_staff_and_covers_its_routes(world, as_role):
    owner = as_role("owner")
    resp = owner.patch(f"{BASE}/tenants/alpha/", {"rate_limit": {"rate": 100}}, format="json")
    assert resp.status_code == 403
    staff = client_for(world["staff"])
    resp = staff.patch(f"{BASE}/tenants/alpha/", {"rate_limit": {"rate": 100, "burst": 10}}, format="json")
    assert resp.status_code == 200, resp.json()
    assert resp.json()["rate_limit"] == {"rate": 100.0, "burst": 10, "key": "none", "header": ""}
    assert owner.get(f"{BASE}/tenants/alpha/").json()["rate_limit"]["rate"] == 100.0  # members see it
    snap = ConfigVersion.objects.latest("number").snapshot
    assert snap["tenant_rate_limits"] == [{"tenant": "alpha", "limit": resp.json()["rate_limit"]}]
    resp = staff.patch(f"{BASE}/tenants/alpha/", {"rate_limit": {"rate": -1}}, format="json")
    assert resp.status_code == 400 and "rate_limit" in resp.json()


def test_nodes_say_since_when_they_run_on_fallback_shares(world):
    node = world["node"]
    node.connected = True
    node.save()
    staff = client_for(world["staff"])
    [row] = staff.get(f"{BASE}/nodes/").json()["results"]
    assert row["rate_limit_fallback_since"] is None
    ratelimits.record_state(node.pk, True, 1_800_000_000.0, "ConnectionError: refused")
    ratelimits.record_state(node.pk, True, 1_800_000_001.0, "again")  # one event per switch
    assert NodeEvent.objects.filter(node=node, kind=ratelimits.EVENT_LOCAL).count() == 1
    [row] = staff.get(f"{BASE}/nodes/").json()["results"]
    assert row["rate_limit_fallback_since"].startswith("2027-01-15T08:00:00")
    ratelimits.record_state(node.pk, False, None, "")
    [row] = staff.get(f"{BASE}/nodes/").json()["results"]
    assert row["rate_limit_fallback_since"] is None


def test_the_openapi_schema_describes_rate_limits(world):
    schema = client_for(world["staff"]).get(f"{BASE}/schema/", HTTP_ACCEPT="application/json").json()
    comps = schema["components"]["schemas"]
    assert "rate_limit" in comps["Route"]["properties"] and "rate_limit" in comps["Tenant"]["properties"]
    limit = comps["RateLimit"]["properties"]
    assert set(limit) == {"rate", "burst", "key", "header"} and limit["rate"].get("description")
    assert "rate_limit_fallback_since" in comps["Node"]["properties"]
