"""/api/v1/access-lists/ and the route fields access_list, maintenance, retry_after:
writes go through validation, another tenant's list is a 404 and cannot be attached,
and the OpenAPI schema describes it all."""
import pytest

from controlplane.proxy import services
from controlplane.proxy.models import AccessList, Route
from controlplane.publishing.models import ConfigVersion
from tests.controlplane.helpers import ACTOR

from .conftest import client_for

pytestmark = pytest.mark.django_db

BASE = "/api/v1"


def test_an_editor_creates_a_list_and_attaches_it_to_a_route(world, as_role):
    api = as_role("editor")
    resp = api.post(f"{BASE}/access-lists/", {
        "name": "office", "default": "deny",
        "rules": [{"action": "allow", "cidr": "192.0.2.0/24"}, {"action": "allow", "cidr": "2001:DB8::/32"}],
    }, format="json")
    assert resp.status_code == 201, resp.json()
    body = resp.json()
    assert body["tenant"] == "alpha" and body["default"] == "deny" and body["routes"] == []
    assert body["rules"][1] == {"action": "allow", "cidr": "2001:db8::/32"}
    assert resp.headers["ETag"]
    route = world["a"].route
    resp = api.patch(f"{BASE}/routes/{route.pk}/", {"access_list": body["id"], "maintenance": True,
                                                    "retry_after": 60}, format="json")
    assert resp.status_code == 200, resp.json()
    assert (resp.json()["access_list"], resp.json()["maintenance"], resp.json()["retry_after"]) == (
        body["id"], True, 60)
    snap = ConfigVersion.objects.latest("number").snapshot
    assert [a["name"] for a in snap["access_lists"]] == ["office"]
    assert api.get(f"{BASE}/access-lists/{body['id']}/").json()["routes"] == [route.pk]


def test_bad_rules_are_a_400_naming_the_field_and_change_nothing(world, as_role):
    api = as_role("editor")
    resp = api.post(f"{BASE}/access-lists/", {"name": "bad", "rules": [{"action": "allow", "cidr": "10.0.0.300"}]},
                    format="json")
    assert resp.status_code == 400
    assert "rules" in resp.json()
    assert not AccessList.objects.filter(name="bad").exists()


def test_another_tenants_list_is_invisible_and_cannot_be_attached(world, as_role):
    beta_list = services.create_access_list(ACTOR, tenant=world["b"].tenant, name="beta-office",
                                            rules=[{"action": "deny", "cidr": "0.0.0.0/0"}])
    api = as_role("owner")
    assert api.get(f"{BASE}/access-lists/{beta_list.pk}/").status_code == 404
    assert api.delete(f"{BASE}/access-lists/{beta_list.pk}/").status_code == 404
    assert [a["name"] for a in api.get(f"{BASE}/access-lists/").json()["results"]] == []
    resp = api.patch(f"{BASE}/routes/{world['a'].route.pk}/", {"access_list": beta_list.pk}, format="json")
    assert resp.status_code == 400 and "access_list" in resp.json()
    assert Route.objects.get(pk=world["a"].route.pk).access_list_id is None
    assert AccessList.objects.filter(pk=beta_list.pk).exists()


def test_a_viewer_cannot_write_and_a_list_in_use_is_not_deleted(world, as_role):
    acl = services.create_access_list(ACTOR, tenant=world["a"].tenant, name="office", rules=[])
    services.update_route(ACTOR, world["a"].route, access_list=acl)
    viewer = as_role("viewer")
    assert viewer.get(f"{BASE}/access-lists/{acl.pk}/").status_code == 200
    assert viewer.delete(f"{BASE}/access-lists/{acl.pk}/").status_code == 403
    resp = client_for(world["staff"]).delete(f"{BASE}/access-lists/{acl.pk}/")
    assert resp.status_code == 400 and "used by routes" in str(resp.json())
    assert AccessList.objects.filter(pk=acl.pk).exists()


def test_the_openapi_schema_describes_access_lists_and_the_route_fields(world):
    schema = client_for(world["staff"]).get(f"{BASE}/schema/", HTTP_ACCEPT="application/json").json()
    assert "/api/v1/access-lists/" in schema["paths"]
    props = schema["components"]["schemas"]["Route"]["properties"]
    assert {"access_list", "maintenance", "retry_after"} <= set(props)
    acl = schema["components"]["schemas"]["AccessList"]["properties"]
    assert {"name", "rules", "default", "tenant"} <= set(acl)
