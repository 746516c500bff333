"""Basic-auth users in config files and backups: hashes only (never a password), an
export applied to an empty installation gives the same users and the same snapshot,
and a file cannot smuggle in a malformed hash."""
from __future__ import annotations

import json

import pytest

from controlplane.configio import backup
from controlplane.proxy import services
from controlplane.proxy.models import AccessList, Route, Target
from controlplane.publishing.models import ConfigVersion, Quarantine
from tests.controlplane.helpers import ACTOR, pool, tenant

from .helpers import apply, as_data, as_text, empty_installation, exported, item

pytestmark = pytest.mark.django_db


def setup_list():
    shop = tenant("shop")
    acl = services.create_access_list(ACTOR, tenant=shop, name="staff", satisfy="any",
                                      rules=[{"action": "allow", "cidr": "192.0.2.0/24"}],
                                      users=[{"username": "alice", "password": "correct horse"}])
    services.create_route(ACTOR, tenant=shop, name="api", hosts=["api.shop.example.com"],
                          pool=pool("web", shop), access_list=acl, forward_authorization=True)
    return acl


def test_the_export_carries_hashes_and_applies_back_to_the_same_snapshot(db):
    acl = setup_list()
    text = exported()
    assert "correct horse" not in text and acl.users[0]["password_hash"] in text
    data = as_data(text)
    got = item(data, "access_lists", "staff", "shop")
    assert got["users"] == [{"username": "alice", "password_hash": acl.users[0]["password_hash"]}]
    assert got["satisfy"] == "any" and item(data, "routes", "api", "shop")["forward_authorization"] is True
    latest = ConfigVersion.objects.latest("number")
    Quarantine.objects.all().delete()
    Target.objects.all().delete()
    empty_installation()
    result = apply(text)
    assert result.ok, [p.as_dict() for p in result.problems]
    restored = AccessList.objects.get(name="staff")
    assert restored.users == acl.users and restored.satisfy == "any"
    assert Route.objects.get(name="api").forward_authorization
    assert exported() == text  # the same file back (ids differ, so the snapshot's hash does)
    snap = ConfigVersion.objects.latest("number").snapshot
    assert snap["access_lists"][0]["users"] == acl.users and latest.snapshot["access_lists"][0]["users"] == acl.users
    assert apply(text).changes == []  # applied again: nothing to change


def test_a_malformed_hash_in_a_file_is_refused(db):
    setup_list()
    data = as_data(exported())
    item(data, "access_lists", "staff", "shop")["users"][0]["password_hash"] = "plain text password"
    result = apply(as_text(data))
    assert not result.ok and "users" in json.dumps([p.as_dict() for p in result.problems])
    assert AccessList.objects.get(name="staff").users[0]["password_hash"].startswith("pbkdf2_sha256$")


def test_backup_and_restore_keep_the_users(db):
    acl = setup_list()
    latest = ConfigVersion.objects.latest("number")
    data = json.loads(json.dumps(backup.backup()))
    assert "correct horse" not in json.dumps(data)
    Quarantine.objects.all().delete()
    Target.objects.all().delete()
    empty_installation()
    restored = backup.restore(data)
    assert restored.same_hash and restored.sha256 == latest.sha256
    assert AccessList.objects.get(name="staff").users == acl.users
