"""Basic auth on /api/v1/access-lists/: passwords are write-only (hashed, never returned,
kept when an update leaves them out), the snapshot carries only hashes, the audit log
only fingerprints; the route field forward_authorization; the OpenAPI schema."""
import json

import pytest

from controlplane.audit.models import AuditEntry
from controlplane.proxy.models import AccessList
from controlplane.publishing.models import ConfigVersion
from dataplane import basicauth, schema

from .conftest import client_for

pytestmark = pytest.mark.django_db

BASE = "/api/v1"


def test_passwords_are_hashed_write_only_and_kept_when_left_out(world, as_role):
    api = as_role("editor")
    resp = api.post(f"{BASE}/access-lists/", {
        "name": "staff", "users": [{"username": "alice", "password": "correct horse"},
                                   {"username": "bob", "password": "battery staple"}]}, format="json")
    assert resp.status_code == 201, resp.json()
    body = resp.json()
    assert body["users"] == [{"username": "alice"}, {"username": "bob"}] and body["satisfy"] == "all"
    assert "correct horse" not in json.dumps(body) and "password_hash" not in json.dumps(body)
    stored = AccessList.objects.get(pk=body["id"]).users
    alice_hash = stored[0]["password_hash"]
    assert basicauth.check_password(b"correct horse", schema.parse_password_hash(alice_hash))
    assert "correct horse" not in json.dumps(stored)

    # attached to a route: the snapshot has the hashes (never a password)
    route = world["a"].route
    resp = api.patch(f"{BASE}/routes/{route.pk}/", {"access_list": body["id"], "forward_authorization": True},
                     format="json")
    assert resp.status_code == 200 and resp.json()["forward_authorization"] is True
    snap = ConfigVersion.objects.latest("number").snapshot
    [acl] = snap["access_lists"]
    assert acl["users"][0] == {"username": "alice", "password_hash": alice_hash} and acl["satisfy"] == "all"
    assert "correct horse" not in json.dumps(snap)
    assert [r for r in snap["routes"] if r["id"] == route.pk][0]["forward_authorization"] is True

    # an update without a password keeps the hash; a user left out is removed
    resp = api.patch(f"{BASE}/access-lists/{body['id']}/", {"users": [{"username": "alice"}],
                                                            "satisfy": "any"}, format="json")
    assert resp.status_code == 200, resp.json()
    assert resp.json()["users"] == [{"username": "alice"}] and resp.json()["satisfy"] == "any"
    assert AccessList.objects.get(pk=body["id"]).users == [{"username": "alice", "password_hash": alice_hash}]
    # a PATCH that does not name users leaves them alone
    assert api.patch(f"{BASE}/access-lists/{body['id']}/", {"default": "deny"}, format="json").status_code == 200
    assert AccessList.objects.get(pk=body["id"]).users[0]["password_hash"] == alice_hash
    # a new password replaces the hash
    api.patch(f"{BASE}/access-lists/{body['id']}/", {"users": [{"username": "alice", "password": "new one"}]},
              format="json")
    new_hash = AccessList.objects.get(pk=body["id"]).users[0]["password_hash"]
    assert new_hash != alice_hash and basicauth.check_password(b"new one", schema.parse_password_hash(new_hash))

    # the audit log shows who changed which user, with a fingerprint instead of the hash
    entries = AuditEntry.objects.filter(object_type__icontains="accesslist").order_by("id")
    text = json.dumps([[e.before, e.after] for e in entries])
    assert "alice" in text and alice_hash not in text and new_hash not in text and "sha256:" in text


@pytest.mark.parametrize("users, message", [
    ([{"username": "carol"}], "carol: a new user needs a password"),
    ([{"username": "a:b", "password": "x"}], "users"),
    ([{"username": "dup", "password": "x"}, {"username": "dup", "password": "y"}], "duplicate user dup"),
    ([{"username": "e", "password_hash": "md5$1$2$3"}], "users"),
])
def test_bad_users_are_a_400_naming_users_and_change_nothing(world, as_role, users, message):
    api = as_role("editor")
    resp = api.post(f"{BASE}/access-lists/", {"name": "bad", "users": users}, format="json")
    assert resp.status_code == 400, resp.json()
    assert "users" in resp.json() and message in json.dumps(resp.json())
    assert not AccessList.objects.filter(name="bad").exists()


def test_a_viewer_sees_usernames_only_and_cannot_set_passwords(world, as_role):
    editor = as_role("editor")
    acl = editor.post(f"{BASE}/access-lists/", {"name": "staff", "users": [{"username": "alice", "password": "pw"}]},
                      format="json").json()
    viewer = as_role("viewer")
    got = viewer.get(f"{BASE}/access-lists/{acl['id']}/").json()
    assert got["users"] == [{"username": "alice"}]
    resp = viewer.patch(f"{BASE}/access-lists/{acl['id']}/", {"users": [{"username": "alice", "password": "x"}]},
                        format="json")
    assert resp.status_code == 403


def test_the_openapi_schema_describes_users_satisfy_and_forward_authorization(world):
    doc = client_for(world["staff"]).get(f"{BASE}/schema/", HTTP_ACCEPT="application/json").json()
    comps = doc["components"]["schemas"]
    assert {"users", "satisfy"} <= set(comps["AccessList"]["properties"])
    assert "forward_authorization" in comps["Route"]["properties"]
    users = {k: v["properties"] for k, v in comps.items() if k.startswith("BasicAuthUser")}
    # the password is in what a client sends, never in what it gets back
    assert all("password_hash" not in props for props in users.values())
    assert any("password" in props for props in users.values())
    assert "password" not in users["BasicAuthUser"]
