"""Shared fixtures for the dashboard tests: two tenants with a route, a pool and a
certificate each, a platform route, a node, and one user per role."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from controlplane.alerts.models import Alert, AlertChannel
from controlplane.publishing.models import Node
from controlplane.tenancy.models import Membership
from tests.controlplane import helpers as h

PASSWORD = "correct horse battery"


@pytest.fixture
def world(db):
    User = get_user_model()
    shop = h.tenant("shop")
    acme = h.tenant("acme")
    users = {"staff": User.objects.create_user("staff", password=PASSWORD, is_staff=True)}
    for role in ("owner", "editor", "viewer"):
        for t in (shop, acme):
            u = User.objects.create_user(f"{t.slug}-{role}", password=PASSWORD)
            Membership.objects.create(user=u, tenant=t, role=role)
            users[f"{t.slug}-{role}"] = u
    objs = {}
    for t in (shop, acme):
        cert = h.certificate(f"{t.slug}-cert", t, names=(f"{t.slug}.example.com", f"*.{t.slug}.example.com"))
        pool = h.pool(f"{t.slug}-pool", t)
        route = h.route(f"{t.slug}-api", t, pool_obj=pool)
        channel = AlertChannel.objects.create(tenant=t, name=f"{t.slug}-mail", kind="email",
                                              emails=[f"ops@{t.slug}.example.com"])
        alert = Alert.objects.create(tenant=t, kind="target_down", subject=f"{t.slug} target down")
        objs[t.slug] = {"tenant": t, "cert": cert, "pool": pool, "route": route, "channel": channel,
                        "alert": alert, "target": pool.targets.first()}
    platform_route = h.route("platform-api")
    node, _ = Node.register("edge-1")
    return {"shop": shop, "acme": acme, "users": users, "objs": objs, "platform_route": platform_route,
            "node": node}


@pytest.fixture
def login(client):
    def do(user):
        client.force_login(user)
        return client
    return do
