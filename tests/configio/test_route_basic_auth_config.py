"""A route's basic_auth in config files and backups: hashes only (never a password), an
export applied to an empty installation gives the same users, realm and snapshot."""
from __future__ import annotations

import json

import pytest

from controlplane.configio import backup
from controlplane.proxy import services
from controlplane.proxy.models import Route, Target
from controlplane.publishing.models import ConfigVersion, Quarantine
from tests.controlplane.helpers import ACTOR, pool, tenant

from .helpers import apply, as_data, as_text, empty_installation, exported, item

pytestmark = pytest.mark.django_db


def setup_route():
    shop = tenant("shop")
    return services.create_route(ACTOR, tenant=shop, name="api", hosts=["api.shop.example.com"],
                                 pool=pool("web", shop), basic_auth={"realm": "Shop staff", "users": [
                                     {"username": "alice", "password": "correct horse"}]})


def test_the_export_carries_hashes_and_applies_back_to_the_same_route(db):
    r = setup_route()
    digest = r.basic_auth["users"][0]["password_hash"]
    text = exported()
    assert "correct horse" not in text and digest in text
    got = item(as_data(text), "routes", "api", "shop")["basic_auth"]
    assert got == {"realm": "Shop staff", "users": [{"username": "alice", "password_hash": digest}]}
    Quarantine.objects.all().delete()
    Target.objects.all().delete()
    empty_installation()
    result = apply(text)
    assert result.ok, [p.as_dict() for p in result.problems]
    assert Route.objects.get(name="api").basic_auth == r.basic_auth
    assert exported() == text
    snap = ConfigVersion.objects.latest("number").snapshot
    assert snap["routes"][0]["basic_auth"]["users"][0]["password_hash"] == digest
    assert apply(text).changes == []


def test_a_bad_basic_auth_in_a_file_is_refused(db):
    setup_route()
    data = as_data(exported())
    item(data, "routes", "api", "shop")["basic_auth"]["users"][0]["password_hash"] = "plain text password"
    result = apply(as_text(data))
    assert not result.ok and "basic_auth" in json.dumps([p.as_dict() for p in result.problems])
    assert Route.objects.get(name="api").basic_auth["users"][0]["password_hash"].startswith("pbkdf2_sha256$")
    item(data, "routes", "api", "shop")["basic_auth"] = "yes"
    assert not apply(as_text(data)).ok


def test_backup_and_restore_keep_the_route_users(db):
    r = setup_route()
    latest = ConfigVersion.objects.latest("number")
    data = json.loads(json.dumps(backup.backup()))
    assert "correct horse" not in json.dumps(data)
    Quarantine.objects.all().delete()
    Target.objects.all().delete()
    empty_installation()
    restored = backup.restore(data)
    assert restored.same_hash and restored.sha256 == latest.sha256
    assert Route.objects.get(name="api").basic_auth == r.basic_auth
