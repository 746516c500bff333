"""Rate limits in configuration files and backups: a route's and a tenant's limit are
exported, applied (changed and removed) through the services, and a backup restores
the very snapshot (same sha256) the nodes ran."""
from __future__ import annotations

import json

import pytest

from controlplane.configio import backup
from controlplane.proxy import services
from controlplane.proxy.models import Route, Target
from controlplane.publishing.models import ConfigVersion, Quarantine
from controlplane.tenancy.models import Tenant
from tests.controlplane.helpers import ACTOR, pool, tenant

from .helpers import apply, as_data, as_text, empty_installation, exported, item

pytestmark = pytest.mark.django_db

LIMIT = {"rate": 20.0, "burst": 5, "key": "client_ip", "header": ""}


def setup_limits():
    shop = tenant("shop")
    services.update_tenant(ACTOR, shop, rate_limit={"rate": 500, "burst": 50})
    services.create_route(ACTOR, tenant=shop, name="api", hosts=["api.shop.example.com"],
                          pool=pool("web", shop), rate_limit=LIMIT)
    return shop


def test_limits_are_exported_and_applied(db):
    setup_limits()
    data = as_data(exported())
    assert item(data, "routes", "api", "shop")["rate_limit"] == LIMIT
    [shop_item] = [t for t in data["tenants"] if t["slug"] == "shop"]
    assert shop_item["rate_limit"] == {"rate": 500.0, "burst": 50, "key": "none", "header": ""}
    item(data, "routes", "api", "shop")["rate_limit"] = {"rate": 7, "key": "header", "header": "X-Api-Key"}
    shop_item["rate_limit"] = None
    result = apply(as_text(data))
    assert not result.problems, result.problems
    assert Route.objects.get(name="api").rate_limit == {"rate": 7.0, "burst": 7, "key": "header",
                                                        "header": "X-Api-Key"}
    assert Tenant.objects.get(slug="shop").rate_limit is None
    snap = ConfigVersion.objects.latest("number").snapshot
    assert "tenant_rate_limits" not in snap
    # a bad limit in the file is refused with the field named, and changes nothing
    item(data, "routes", "api", "shop")["rate_limit"] = {"rate": 0}
    result = apply(as_text(data))
    assert result.problems and "rate_limit" in json.dumps([p.__dict__ if hasattr(p, "__dict__") else p
                                                           for p in result.problems], default=str)
    assert Route.objects.get(name="api").rate_limit["rate"] == 7.0
    item(data, "routes", "api", "shop")["rate_limit"] = None  # removing the limit is a change too
    assert not apply(as_text(data)).problems
    assert Route.objects.get(name="api").rate_limit is None


def test_backup_and_restore_keep_rate_limits(db):
    setup_limits()
    latest = ConfigVersion.objects.latest("number")
    assert latest.snapshot["tenant_rate_limits"][0]["tenant"] == "shop"
    data = json.loads(json.dumps(backup.backup()))
    Quarantine.objects.all().delete()
    Target.objects.all().delete()
    empty_installation()
    restored = backup.restore(data)
    assert restored.same_hash and restored.sha256 == latest.sha256
    assert Route.objects.get(name="api").rate_limit == LIMIT
    assert Tenant.objects.get(slug="shop").rate_limit["rate"] == 500.0
