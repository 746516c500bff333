"""Tenant isolation: a member of alpha, whatever their role, never sees nor changes
beta's objects — by id it is a 404 and nothing changes; lists hold only alpha's."""
import pytest
from django.forms.models import model_to_dict

from controlplane.alerts.models import Alert, AlertChannel
from controlplane.audit.models import AuditEntry
from controlplane.proxy.models import Certificate, Pool, Route
from controlplane.publishing.models import ConfigVersion, Node
from controlplane.tenancy.models import ApiToken, Delegation, Membership, Tenant

from .conftest import ROLES

pytestmark = pytest.mark.django_db

BASE = "/api/v1"

# resource → (model, key of beta's object, a harmless change)
RESOURCES = {
    "tenants": (Tenant, lambda w: w["b"].tenant.slug, {"name": "Taken"}),
    "delegations": (Delegation, lambda w: w["b"].delegation.pk, {"suffix": "x.alpha.example.com"}),
    "members": (Membership, lambda w: w["b"].member.pk, {"role": "owner"}),
    "pools": (Pool, lambda w: w["b"].pool.pk, {"read_timeout": 1.0}),
    "routes": (Route, lambda w: w["b"].route.pk, {"path": "/stolen"}),
    "certificates": (Certificate, lambda w: w["b"].certificate.pk, {"name": "stolen"}),
    "alert-channels": (AlertChannel, lambda w: w["b"].channel.pk, {"url": "https://93.184.216.34/stolen"}),
    "api-tokens": (ApiToken, lambda w: w["b"].token.pk, {"name": "stolen"}),
    "alerts": (Alert, lambda w: w["b"].alert.pk, {"subject": "stolen"}),
    "audit": (AuditEntry, lambda w: AuditEntry.objects.filter(tenant=w["b"].tenant).first().pk, {"note": "x"}),
    "nodes": (Node, lambda w: w["node"].pk, {"name": "stolen"}),
    "versions": (ConfigVersion, lambda w: ConfigVersion.objects.order_by("number").first().number, {"note": "x"}),
}
READ_ONLY = {"alerts", "audit", "versions"}
NO_UPDATE = {"api-tokens", "nodes"}
LOOKUP = {"tenants": "slug", "versions": "number"}


def state(model, key, lookup="pk"):
    return model_to_dict(model.objects.get(**{lookup: key}))


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("resource", RESOURCES)
def test_it_hides_another_tenants_object_by_id(world, as_role, resource, role):
    model, key_of, change = RESOURCES[resource]
    key, lookup = key_of(world), LOOKUP.get(resource, "pk")
    api = as_role(role)
    before, count = state(model, key, lookup), model.objects.count()
    url = f"{BASE}/{resource}/{key}/"
    assert api.get(url).status_code == 404
    expected_write = 405 if resource in READ_ONLY else 404
    assert api.patch(url, change, format="json").status_code == (405 if resource in NO_UPDATE else expected_write)
    assert api.put(url, change, format="json").status_code == (405 if resource in NO_UPDATE else expected_write)
    assert api.delete(url).status_code == (405 if resource in READ_ONLY | {"nodes"} else 404)
    for extra in ("revoke", "rollback"):
        if (resource, extra) in (("api-tokens", "revoke"), ("nodes", "revoke"), ("versions", "rollback")):
            assert api.post(f"{url}{extra}/").status_code == 404
    assert state(model, key, lookup) == before and model.objects.count() == count


def tenant_of(resource, item):
    return item["slug"] if resource == "tenants" else item["tenant"]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("resource", RESOURCES)
def test_it_lists_only_the_members_own_tenant(world, as_role, resource, role):
    api = as_role(role)
    body = api.get(f"{BASE}/{resource}/").json()
    items = body["results"]
    assert body["count"] == len(items)
    if resource in ("nodes", "versions"):
        assert items == []  # platform objects: staff only
        return
    tenants = {tenant_of(resource, item) for item in items}
    if resource == "api-tokens":
        assert tenants <= {"alpha", None}   # alpha's (owners) and one's own per-user tokens
        assert ("alpha" in tenants) == (role == "owner")
    else:
        assert tenants == {"alpha"}, items
    assert api.get(f"{BASE}/{resource}/?tenant=beta").json()["results"] == []


def test_it_refuses_beta_as_the_tenant_of_a_new_object(world, as_role):
    api = as_role("owner")
    count = Pool.objects.count()
    r = api.post(f"{BASE}/pools/", {"tenant": "beta", "name": "mine", "targets": []}, format="json")
    assert r.status_code == 400 and "tenant" in r.json()
    r = api.post(f"{BASE}/routes/", {"tenant": "alpha", "name": "x", "hosts": ["x.alpha.example.com"],
                                     "pool": world["b"].pool.pk}, format="json")
    assert r.status_code == 400 and "pool" in r.json()
    assert Pool.objects.count() == count and not Route.objects.filter(name="x").exists()


def test_it_does_not_diff_versions_for_members(world, as_role):
    assert as_role("owner").get(f"{BASE}/versions/diff/?from=1&to=2").status_code == 400
