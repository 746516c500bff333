"""Basic auth in the control plane: the service hashes and keeps passwords, the
validation names bad users, checkconfig finds a broken stored hash, "why 4xx" explains 401/429 refusals, tenants stay apart, and the
version diff shows fingerprints instead of hashes."""
import json
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from controlplane.diagnostics.services.errors import explained_errors
from controlplane.proxy import basic_auth, services
from controlplane.proxy.models import AccessList
from controlplane.publishing import publisher
from controlplane.publishing.models import ConfigVersion
from dataplane import basicauth, schema

from .helpers import ACTOR, route, tenant

pytestmark = pytest.mark.django_db


def users(*names):
    return [{"username": n, "password": f"{n}-pw"} for n in names]


def test_passwords_are_hashed_and_a_user_without_one_keeps_the_stored_hash():
    acl = services.create_access_list(ACTOR, name="staff", users=users("alice", "bob"))
    stored = {u["username"]: u["password_hash"] for u in acl.users}
    for name, digest in stored.items():
        assert basicauth.check_password(f"{name}-pw".encode(), schema.parse_password_hash(digest))
    acl = services.update_access_list(ACTOR, acl, users=[{"username": "bob"}, {"username": "carol",
                                                                               "password": "c"}])
    assert [u["username"] for u in acl.users] == ["bob", "carol"]
    assert acl.users[0]["password_hash"] == stored["bob"]


def test_bad_users_are_refused_naming_users_and_nothing_is_stored():
    with pytest.raises(ValidationError) as exc:
        services.create_access_list(ACTOR, name="staff", users=[{"username": "new"}])
    assert "new: a new user needs a password" in str(exc.value.message_dict["users"])
    with pytest.raises(ValidationError) as exc:
        services.create_access_list(ACTOR, name="staff", users=users("with space"))
    assert "users" in exc.value.message_dict
    with pytest.raises(ValidationError) as exc:
        services.create_access_list(ACTOR, name="staff", users=users(*[f"u{i}" for i in range(21)]))
    assert "at most 20 passwords" in str(exc.value.message_dict["users"])
    with pytest.raises(ValidationError):
        services.create_access_list(ACTOR, name="staff", satisfy="sometimes")
    assert not AccessList.objects.exists()


def test_a_tenants_route_cannot_use_another_tenants_users():
    shop, acme = tenant("shop"), tenant("acme")
    theirs = services.create_access_list(ACTOR, tenant=acme, name="staff", users=users("alice"))
    with pytest.raises(ValidationError) as exc:
        route("api", shop, access_list=theirs.id)
    assert "access_list" in exc.value.message_dict


def test_the_version_diff_shows_fingerprints_not_hashes():
    acl = services.create_access_list(ACTOR, name="staff", users=users("alice"))
    route("api", access_list=acl.id)
    before = ConfigVersion.objects.latest("number")
    services.update_access_list(ACTOR, acl, users=[{"username": "alice", "password": "changed"}])
    after = ConfigVersion.objects.latest("number")
    text = json.dumps(publisher.diff(before, after))
    new_hash = AccessList.objects.get().users[0]["password_hash"]
    assert "users" in text and "sha256:" in text
    assert new_hash not in text and acl.users[0]["password_hash"] not in text
    assert basic_auth.fingerprint(new_hash) in text


def test_why_4xx_names_basic_auth():
    acl = services.create_access_list(ACTOR, name="staff", users=users("alice", "bob"), satisfy="any")
    r = route("api", access_list=acl.id)
    summary = {"errors_by_type": [{"type": "http_request_denied", "count": 3, "status": 401}]}
    [item] = explained_errors(summary, r)
    assert item["policy"]["basic_auth_users"] == 2 and item["policy"]["satisfy"] == "any"
    assert 'basic auth staff' in item["check"] and "throttled" in item["check"]
    assert "basic auth" in item["meaning"]


def test_checkconfig_finds_a_broken_stored_hash():
    """(The e2e test runs checkconfig as a subprocess against a real installation.)"""
    acl = services.create_access_list(ACTOR, name="staff", users=users("alice"))
    route("api", access_list=acl.id)
    AccessList.objects.filter(pk=acl.pk).update(users=[{"username": "alice", "password_hash": "not-a-hash"}])
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("checkconfig", "--schema-only", stdout=out)
    assert f"ERROR access list staff (id {acl.pk}): access_lists[0].users[0].password_hash:" in out.getvalue()
