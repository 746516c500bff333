"""Backup and restore keep access lists and the routes that use them: the restored
installation compiles to the very snapshot (same sha256) the nodes ran."""
from __future__ import annotations

import json

import pytest

from controlplane.configio import backup
from controlplane.proxy import services
from controlplane.proxy.models import AccessList, Route, Target
from controlplane.publishing.models import ConfigVersion, Quarantine
from tests.controlplane.helpers import ACTOR, pool, tenant

from .helpers import empty_installation

pytestmark = pytest.mark.django_db


def test_backup_and_restore_keep_access_lists(db):
    shop = tenant("shop")
    acl = services.create_access_list(ACTOR, tenant=shop, name="office", default="deny",
                                      rules=[{"action": "allow", "cidr": "192.0.2.0/24"}])
    services.create_route(ACTOR, tenant=shop, name="api", hosts=["api.shop.example.com"],
                          pool=pool("web", shop), access_list=acl, maintenance=True, retry_after=30)
    latest = ConfigVersion.objects.latest("number")
    data = json.loads(json.dumps(backup.backup()))
    Quarantine.objects.all().delete()
    Target.objects.all().delete()
    empty_installation()
    assert not AccessList.objects.exists()
    restored = backup.restore(data)
    assert restored.same_hash and restored.sha256 == latest.sha256
    route = Route.objects.get(name="api")
    assert route.access_list.name == "office" and route.access_list.rules == acl.rules
    assert (route.maintenance, route.retry_after) == (True, 30)
