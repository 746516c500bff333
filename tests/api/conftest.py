"""Two tenants (alpha, beta) with one of every object each, users for every role,
and clients that authenticate with real bearer tokens."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from controlplane.alerts.models import Alert, AlertChannel, Delivery
from controlplane.alerts.services import save_channel
from controlplane.proxy import services
from controlplane.publishing.models import Node
from controlplane.tenancy.models import ApiToken, Membership
from tests.controlplane.helpers import ACTOR, PUBLIC_IP, issue

ROLES = ("owner", "editor", "viewer")


@pytest.fixture(autouse=True)
def encryption_key(settings):
    settings.SWITCHYARD_ENCRYPTION_KEY = "test-encryption-key"


@dataclass
class Side:
    """One tenant and one object of every kind it can own."""
    tenant: object
    delegation: object
    pool: object
    route: object
    certificate: object
    channel: object
    alert: object
    token: object
    member: object
    users: dict = field(default_factory=dict)


def build_side(slug: str) -> Side:
    User = get_user_model()
    tenant = services.create_tenant(ACTOR, slug=slug, name=slug.title())
    delegation = services.create_delegation(ACTOR, tenant, f"{slug}.example.com")
    pool = services.create_pool(ACTOR, tenant=tenant, name=f"{slug}-web",
                                targets=[{"host": PUBLIC_IP, "port": 8080}])
    pem, key = issue(f"{slug}.example.com", f"*.{slug}.example.com")
    cert = services.create_certificate(ACTOR, tenant=tenant, name=f"{slug}-cert", certificate_pem=pem,
                                       private_key_pem=key)
    route = services.create_route(ACTOR, tenant=tenant, name=f"{slug}-api", hosts=[f"api.{slug}.example.com"],
                                  pool=pool, certificate=cert)
    channel = save_channel(ACTOR, AlertChannel(tenant=tenant, name=f"{slug}-hook", kind="webhook",
                                               url=f"https://{PUBLIC_IP}/hook"), secret="s3cret")
    alert = Alert.objects.create(tenant=tenant, kind="target_down", subject=f"{slug} target down")
    Delivery.objects.create(alert=alert, channel=channel, status=Delivery.FAILED, error="boom")
    users = {}
    for role in ROLES:
        user = User.objects.create_user(f"{slug}-{role}")
        Membership.objects.create(user=user, tenant=tenant, role=role)
        users[role] = user
    token, _ = ApiToken.issue(users["owner"], tenant=tenant, role="editor", name=f"{slug} ci")
    member = Membership.objects.get(user=users["viewer"])
    return Side(tenant, delegation, pool, route, cert, channel, alert, token, member, users)


@pytest.fixture
def world(db):
    User = get_user_model()
    staff = User.objects.create_user("operator", is_staff=True)
    a, b = build_side("alpha"), build_side("beta")
    node, _ = Node.register("edge-1")
    return {"staff": staff, "a": a, "b": b, "node": node}


def client_for(user=None, *, tenant=None, role="") -> APIClient:
    """A client with a fresh bearer token of ``user`` (per tenant with ``tenant``)."""
    client = APIClient()
    if user is not None:
        row, plain = ApiToken.issue(user, tenant=tenant, role=role)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
        client.token = row
        client.plain = plain
    return client


@pytest.fixture
def staff_api(world):
    return client_for(world["staff"])


@pytest.fixture
def as_role(world):
    """as_role("editor") → a client acting as alpha's editor (a per-user token)."""
    return lambda role, side="a": client_for(world[side].users[role])
