"""A configuration with one of every object: the platform's and two tenants' (alpha, beta)."""
from __future__ import annotations

import pytest

from controlplane.alerts.models import AlertChannel
from controlplane.alerts.services import save_channel
from controlplane.proxy import services
from controlplane.tenancy.access import Principal
from tests.controlplane.helpers import ACTOR, PUBLIC_IP, issue

STAFF = Principal(staff=True)
PASSPHRASE = b"correct horse battery"


@pytest.fixture(autouse=True)
def encryption_key(settings):
    settings.SWITCHYARD_ENCRYPTION_KEY = "test-encryption-key"


def build_tenant(slug: str) -> dict:
    tenant = services.create_tenant(ACTOR, slug=slug, name=slug.title(), max_routes=20)
    services.create_delegation(ACTOR, tenant, f"{slug}.example.com")
    pool = services.create_pool(ACTOR, tenant=tenant, name="web", targets=[{"host": PUBLIC_IP, "port": 8080},
                                                                           {"host": PUBLIC_IP, "port": 8081,
                                                                            "weight": 3}],
                                health_check_enabled=True, health_check_path="/healthz")
    pem, key = issue(f"{slug}.example.com", f"*.{slug}.example.com")
    cert = services.create_certificate(ACTOR, tenant=tenant, name="wildcard", certificate_pem=pem,
                                       private_key_pem=key)
    route = services.create_route(ACTOR, tenant=tenant, name="api", hosts=[f"api.{slug}.example.com"], pool=pool,
                                  certificate=cert, path="/v1", request_headers={"set": [{"name": "X-Env",
                                                                                          "value": slug}]})
    services.create_route(ACTOR, tenant=tenant, name="www", hosts=[f"www.{slug}.example.com"], pool=pool)
    save_channel(ACTOR, AlertChannel(tenant=tenant, name="oncall", kind="webhook", url=f"https://{PUBLIC_IP}/hook"),
                 secret="s3cret")
    return {"tenant": tenant, "pool": pool, "route": route, "certificate": cert}


@pytest.fixture
def world(db):
    pool = services.create_pool(ACTOR, name="platform-web", targets=[{"host": "127.0.0.1", "port": 9000}])
    services.create_route(ACTOR, name="status", hosts=["status.localhost"], pool=pool)
    save_channel(ACTOR, AlertChannel(name="ops", kind="email", emails=["ops@example.com"]))
    return {"alpha": build_tenant("alpha"), "beta": build_tenant("beta")}
