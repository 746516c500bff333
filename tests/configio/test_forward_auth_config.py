"""Forward auth survives export → apply → export (a configuration file) and backup →
restore (same sha256 as the nodes ran); a file with a bad forward auth is refused."""
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

FA = {"url": "https://auth.shop.example.com/outpost.goauthentik.io/auth/traefik",
      "response_headers": ["X-Authentik-Username", "X-Authentik-Groups"], "timeout": 2.5}


def shop_route():
    shop = tenant("shop")
    return services.create_route(ACTOR, tenant=shop, name="api", hosts=["api.shop.example.com"],
                                 pool=pool("web", shop), forward_auth=FA)


def test_export_apply_export_keeps_forward_auth(db):
    shop_route()
    before = exported()
    assert item(as_data(before), "routes", "api", "shop")["forward_auth"] == FA
    empty_installation()
    result = apply(before, note="rebuild")
    assert result.ok, result.problems
    assert Route.objects.get(name="api").forward_auth == FA
    assert exported() == before
    data = as_data(before)
    item(data, "routes", "api", "shop")["forward_auth"] = {**FA, "url": "http://169.254.169.254/"}
    refused = apply(as_text(data))
    assert not refused.ok
    assert any(p.path.endswith("forward_auth") and "169.254.169.254" in p.message for p in refused.problems), \
        refused.problems


def test_backup_and_restore_keep_forward_auth(db):
    shop_route()
    latest = ConfigVersion.objects.latest("number")
    data = json.loads(json.dumps(backup.backup()))
    Quarantine.objects.all().delete()
    Target.objects.all().delete()
    empty_installation()
    restored = backup.restore(data)
    assert restored.same_hash and restored.sha256 == latest.sha256
    assert Route.objects.get(name="api").forward_auth == FA
