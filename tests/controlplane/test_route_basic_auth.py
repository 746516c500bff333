"""A route's own basic auth in the control plane: the service hashes and keeps passwords
(the same users-merge function as access lists), the compiler sends the realm (the
route's name by default) and hashes only, validation names bad values under
``basic_auth``, the audit log and version diff show fingerprints, checkconfig checks the
stored hashes."""
import json
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from controlplane.audit.models import AuditEntry
from controlplane.proxy import basic_auth, services
from controlplane.proxy.models import Route
from controlplane.publishing import publisher
from controlplane.publishing.models import ConfigVersion
from dataplane import basicauth, schema

from .helpers import ACTOR, route

pytestmark = pytest.mark.django_db


def users(*names):
    return [{"username": n, "password": f"{n}-pw"} for n in names]


def snap_route(r):
    return [x for x in ConfigVersion.objects.latest("number").snapshot["routes"] if x["id"] == r.pk][0]


def test_passwords_are_hashed_kept_and_compiled_as_hashes_with_the_realm():
    r = route("api", basic_auth={"users": users("alice", "bob")})
    stored = {u["username"]: u["password_hash"] for u in r.basic_auth["users"]}
    assert r.basic_auth["realm"] == ""
    for name, digest in stored.items():
        assert basicauth.check_password(f"{name}-pw".encode(), schema.parse_password_hash(digest))
    assert snap_route(r)["basic_auth"] == {"realm": "api", "users": [
        {"username": "alice", "password_hash": stored["alice"]}, {"username": "bob", "password_hash": stored["bob"]}]}
    r = services.update_route(ACTOR, r, basic_auth={"realm": " Team ", "users": [
        {"username": "bob"}, {"username": "carol", "password": "c"}]})
    assert r.basic_auth["realm"] == "Team" and [u["username"] for u in r.basic_auth["users"]] == ["bob", "carol"]
    assert r.basic_auth["users"][0]["password_hash"] == stored["bob"]
    assert snap_route(r)["basic_auth"]["realm"] == "Team"
    assert "bob-pw" not in json.dumps(ConfigVersion.objects.latest("number").snapshot)
    r = services.update_route(ACTOR, r, basic_auth=None)
    assert r.basic_auth is None and "basic_auth" not in snap_route(r)


@pytest.mark.parametrize("value, message", [
    ({"users": [{"username": "new"}]}, "new: a new user needs a password"),
    ({"users": []}, "at least one user"),
    ({"users": users("with space")}, "users[0].username"),
    ({"users": users(*[f"u{i}" for i in range(21)])}, "at most 20 passwords"),
    ({"realm": "x\ny", "users": users("a")}, "realm"),
    ({"users": users("a"), "extra": 1}, "null, or"),
    ("on", "null, or"),
])
def test_bad_basic_auth_is_refused_under_basic_auth_and_nothing_is_stored(value, message):
    with pytest.raises(ValidationError) as exc:
        route("api", basic_auth=value)
    assert message in str(exc.value.message_dict["basic_auth"])
    assert not Route.objects.exists()


def test_the_audit_log_and_version_diff_show_fingerprints_not_hashes():
    r = route("api", basic_auth={"users": users("alice")})
    old_hash = r.basic_auth["users"][0]["password_hash"]
    before = ConfigVersion.objects.latest("number")
    services.update_route(ACTOR, r, basic_auth={"users": [{"username": "alice", "password": "changed"}]})
    after = ConfigVersion.objects.latest("number")
    new_hash = Route.objects.get().basic_auth["users"][0]["password_hash"]
    diff = json.dumps(publisher.diff(before, after))
    assert "basic_auth" in diff and basic_auth.fingerprint(new_hash) in diff
    assert new_hash not in diff and old_hash not in diff
    audit = json.dumps([[e.before, e.after] for e in AuditEntry.objects.all()])
    assert "alice" in audit and new_hash not in audit and old_hash not in audit
    assert basic_auth.fingerprint(old_hash) in audit and basic_auth.fingerprint(new_hash) in audit


def test_checkconfig_finds_a_broken_stored_hash_on_a_route():
    r = route("api", basic_auth={"users": users("alice")})
    Route.objects.filter(pk=r.pk).update(basic_auth={"realm": "", "users": [
        {"username": "alice", "password_hash": "not-a-hash"}]})
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("checkconfig", "--schema-only", stdout=out)
    assert "routes[0].basic_auth.users[0].password_hash" in out.getvalue()


def test_why_4xx_names_the_routes_own_basic_auth():
    from controlplane.diagnostics.services.errors import explained_errors
    r = route("api", basic_auth={"realm": "Team", "users": users("alice", "bob")})
    summary = {"errors_by_type": [{"type": "http_request_denied", "count": 3, "status": 401}]}
    [item] = explained_errors(summary, r)
    assert item["policy"]["route_basic_auth_users"] == 2
    assert "basic auth Team" in item["check"] and "throttled" in item["check"]


def test_checkconfig_passes_with_route_basic_auth():
    route("api", basic_auth={"realm": "Team", "users": users("alice")})
    out = StringIO()
    call_command("checkconfig", stdout=out)
    assert "OK: the stored configuration is valid" in out.getvalue()
