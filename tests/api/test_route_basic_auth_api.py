"""The route field basic_auth on /api/v1/routes/: passwords are write-only (hashed, never
returned, kept when an update names the user without one), reads show the realm (the
route's name by default) and usernames, the snapshot carries only hashes, the audit log
only fingerprints, tenants stay apart; the OpenAPI schema documents it."""
import json

import pytest

from controlplane.audit.models import AuditEntry
from controlplane.proxy.models import Route
from controlplane.publishing.models import ConfigVersion
from dataplane import basicauth, schema

from .conftest import client_for

pytestmark = pytest.mark.django_db

BASE = "/api/v1"


def _snap_route(route_id):
    snap = ConfigVersion.objects.latest("number").snapshot
    return [r for r in snap["routes"] if r["id"] == route_id][0], snap


def test_route_basic_auth_is_write_only_and_keeps_hashes(world, as_role):
    api = as_role("editor")
    route = world["a"].route
    resp = api.patch(f"{BASE}/routes/{route.pk}/", {"basic_auth": {"users": [
        {"username": "alice", "password": "correct horse"}, {"username": "bob", "password": "battery"}]}},
        format="json")
    assert resp.status_code == 200, resp.json()
    body = resp.json()
    assert body["basic_auth"] == {"realm": route.name, "users": [{"username": "alice"}, {"username": "bob"}]}
    assert "correct horse" not in json.dumps(body) and "password_hash" not in json.dumps(body)
    stored = Route.objects.get(pk=route.pk).basic_auth
    alice_hash = stored["users"][0]["password_hash"]
    assert stored["realm"] == ""  # the route's name, followed when it is renamed
    assert basicauth.check_password(b"correct horse", schema.parse_password_hash(alice_hash))

    # the snapshot: the effective realm and hashes only
    snap_route, snap = _snap_route(route.pk)
    assert snap_route["basic_auth"]["realm"] == route.name
    assert snap_route["basic_auth"]["users"][0] == {"username": "alice", "password_hash": alice_hash}
    assert "correct horse" not in json.dumps(snap)

    # a GET shows the same; a user named without a password keeps the hash, one left out goes
    assert api.get(f"{BASE}/routes/{route.pk}/").json()["basic_auth"]["users"] == [
        {"username": "alice"}, {"username": "bob"}]
    resp = api.patch(f"{BASE}/routes/{route.pk}/", {"basic_auth": {"realm": "Staff only",
                                                                   "users": [{"username": "alice"}]}},
                     format="json")
    assert resp.status_code == 200, resp.json()
    assert resp.json()["basic_auth"] == {"realm": "Staff only", "users": [{"username": "alice"}]}
    assert Route.objects.get(pk=route.pk).basic_auth == {
        "realm": "Staff only", "users": [{"username": "alice", "password_hash": alice_hash}]}
    # a PATCH that does not name basic_auth leaves it alone
    assert api.patch(f"{BASE}/routes/{route.pk}/", {"priority": 3}, format="json").status_code == 200
    assert Route.objects.get(pk=route.pk).basic_auth["users"][0]["password_hash"] == alice_hash
    # a new password replaces the hash
    assert api.patch(f"{BASE}/routes/{route.pk}/", {"basic_auth": {"users": [
        {"username": "alice", "password": "new one"}]}}, format="json").status_code == 200
    new_hash = Route.objects.get(pk=route.pk).basic_auth["users"][0]["password_hash"]
    assert new_hash != alice_hash and basicauth.check_password(b"new one", schema.parse_password_hash(new_hash))

    # the audit log shows fingerprints, never a hash
    entries = AuditEntry.objects.filter(object_type__icontains="route").order_by("id")
    text = json.dumps([[e.before, e.after] for e in entries])
    assert "alice" in text and alice_hash not in text and new_hash not in text and "sha256:" in text

    # null turns it off
    resp = api.patch(f"{BASE}/routes/{route.pk}/", {"basic_auth": None}, format="json")
    assert resp.status_code == 200 and resp.json()["basic_auth"] is None
    assert "basic_auth" not in _snap_route(route.pk)[0]


@pytest.mark.parametrize("value, message", [
    ({"users": [{"username": "carol"}]}, "carol: a new user needs a password"),
    ({"users": []}, "at least one user"),
    ({"users": [{"username": "a:b", "password": "x"}]}, "username"),
    ({"users": [{"username": "d", "password": "x"}, {"username": "d", "password": "y"}]}, "duplicate user d"),
    ({"realm": "caf\u00e9", "users": [{"username": "e", "password": "x"}]}, "printable ASCII"),
])
def test_bad_basic_auth_is_a_400_and_changes_nothing(world, as_role, value, message):
    api = as_role("editor")
    route = world["a"].route
    versions = ConfigVersion.objects.count()
    resp = api.patch(f"{BASE}/routes/{route.pk}/", {"basic_auth": value}, format="json")
    assert resp.status_code == 400, resp.json()
    assert "basic_auth" in resp.json() and message in json.dumps(resp.json()), resp.json()
    assert Route.objects.get(pk=route.pk).basic_auth is None
    assert ConfigVersion.objects.count() == versions


def test_create_with_basic_auth_and_tenants_stay_apart(world, as_role):
    alpha = as_role("editor")
    route = world["a"].route
    resp = alpha.post(f"{BASE}/routes/", {
        "name": "guarded", "hosts": ["guarded." + route.hosts[0]], "pool": route.pool_id,
        "basic_auth": {"realm": "Alpha", "users": [{"username": "alice", "password": "pw"}]}}, format="json")
    assert resp.status_code == 201, resp.json()
    created = resp.json()
    assert created["basic_auth"] == {"realm": "Alpha", "users": [{"username": "alice"}]}

    # beta's editor can neither read nor change alpha's route
    beta = as_role("editor", side="b")
    assert beta.get(f"{BASE}/routes/{created['id']}/").status_code == 404
    resp = beta.patch(f"{BASE}/routes/{created['id']}/", {"basic_auth": {"users": [
        {"username": "mallory", "password": "x"}]}}, format="json")
    assert resp.status_code == 404
    assert [u["username"] for u in Route.objects.get(pk=created["id"]).basic_auth["users"]] == ["alice"]
    # a viewer sees usernames only and cannot set passwords
    viewer = as_role("viewer")
    assert viewer.get(f"{BASE}/routes/{created['id']}/").json()["basic_auth"]["users"] == [{"username": "alice"}]
    assert viewer.patch(f"{BASE}/routes/{created['id']}/", {"basic_auth": None}, format="json").status_code == 403


def test_the_openapi_schema_documents_route_basic_auth(world):
    doc = client_for(world["staff"]).get(f"{BASE}/schema/", HTTP_ACCEPT="application/json").json()
    comps = doc["components"]["schemas"]
    assert "basic_auth" in comps["Route"]["properties"]
    auth = {k: v["properties"] for k, v in comps.items() if k.startswith("RouteBasicAuth")}
    assert auth and all({"realm", "users"} <= set(props) for props in auth.values())
    assert "password" not in comps["BasicAuthUser"]["properties"]
