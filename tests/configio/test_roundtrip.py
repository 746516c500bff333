"""Round trip of every section with every field away from its default: export (with
keys) → apply to an empty installation → export again gives the same file, and what
the file cannot show (private keys, webhook secrets) survives too."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from controlplane import crypto
from controlplane.alerts.models import AlertChannel
from controlplane.alerts.services import save_channel
from controlplane.configio import document
from controlplane.proxy import services
from controlplane.proxy.models import Certificate, Pool
from tests.controlplane.helpers import ACTOR, PUBLIC_IP, ca, issue

from .conftest import PASSPHRASE
from .helpers import apply, as_data, as_text, empty_installation, exported, item

pytestmark = pytest.mark.django_db


def stored_keys() -> dict:
    """Each certificate's private key, as the key's own numbers (the PEM encoding may differ)."""
    out = {}
    for cert in Certificate.objects.all():
        key = serialization.load_pem_private_key(crypto.decrypt(cert.private_key_encrypted).encode(), password=None)
        out[cert.name] = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())
    return out


def default(field: str):
    return Pool._meta.get_field(field).get_default()


@pytest.fixture
def everything(db):
    tenant = services.create_tenant(ACTOR, slug="full", name="Full Ltd", max_routes=7, max_pools=6, max_targets=9,
                                    max_certificates=5, allowed_networks=["203.0.113.0/24"])
    for suffix in ("full.example.com", "full.example.net"):
        services.create_delegation(ACTOR, tenant, suffix)
    pem, key = issue("full.example.com", "*.full.example.com", "*.full.example.net")
    cert = services.create_certificate(ACTOR, tenant=tenant, name="wildcard", certificate_pem=pem,
                                       private_key_pem=key)
    acme_pem, acme_key = issue("shop.full.example.com")
    services.create_certificate(ACTOR, tenant=tenant, name="acme-shop", certificate_pem=acme_pem,
                                private_key_pem=acme_key, source=Certificate.ACME)
    pool = services.create_pool(
        ACTOR, tenant=tenant, name="backend",
        targets=[{"host": PUBLIC_IP, "port": 8443, "weight": 5},
                 {"host": PUBLIC_IP, "port": 8444, "weight": 2, "state": "draining"}],
        algorithm="consistent_hash", hash_on="header", hash_key="X-User", connect_timeout=2.5, read_timeout=30.0,
        retries=2, passive_failures=3, passive_ejection_seconds=12.0, tls_enabled=True, tls_verify=False,
        tls_sni="backend.internal", tls_ca_pem=ca().cert_pem.bytes().decode(), health_check_enabled=not default("health_check_enabled"),
        health_check_type="tcp" if default("health_check_type") == "http" else "http", health_check_path="/hz",
        health_check_method="HEAD", health_check_expected_statuses="200,204", health_check_host="hc.internal",
        health_check_interval=3.0, health_check_timeout=1.5, healthy_threshold=3, unhealthy_threshold=4)
    office = services.create_access_list(
        ACTOR, tenant=tenant, name="office", default="deny",
        rules=[{"action": "deny", "cidr": "203.0.113.9/32"}, {"action": "allow", "cidr": "203.0.113.0/24"},
               {"action": "allow", "cidr": "2001:db8::/32"}])
    services.create_route(
        ACTOR, tenant=tenant, name="api", access_list=office, maintenance=True, retry_after=90,
        hosts=["api.full.example.com", "*.full.example.net"], pool=pool,
        certificate=cert, path="/v1", path_type="prefix", methods=["GET", "POST"],
        headers=[{"name": "X-Env", "value": "prod"}], priority=5, strip_prefix=True, preserve_host=False,
        request_headers={"set": [{"name": "X-From", "value": "edge"}]},
        response_headers={"remove": ["Server"]}, websocket=True, https_redirect=True, hsts_max_age=3600,
        max_body_size=10 * 1024 * 1024, forwarded=True, enabled=False)
    services.create_route(ACTOR, tenant=tenant, name="shop", hosts=["shop.full.example.com"], pool=pool,
                          path="/exact", path_type="exact")
    services.create_pool(ACTOR, tenant=tenant, name="sticky", targets=[{"host": PUBLIC_IP, "port": 80}],
                         sticky_cookie="srv")
    platform = services.create_pool(ACTOR, name="platform", targets=[{"host": "127.0.0.1", "port": 9000}])
    services.create_route(ACTOR, name="status", hosts=["status.localhost"], pool=platform, path="^/s/[0-9]+$",
                          path_type="regex")
    save_channel(ACTOR, AlertChannel(tenant=tenant, name="hook", kind="webhook", url=f"https://{PUBLIC_IP}/hook"),
                 secret="webhook-s3cret")
    save_channel(ACTOR, AlertChannel(name="ops", kind="email", emails=["ops@example.com", "noc@example.com"],
                                     enabled=False))
    return tenant


def test_every_section_and_field_survives_export_apply_export(everything):
    before = exported()
    data = as_data(before)
    # (access lists, being added to the file as this is written, are covered by their own tests)
    for section in ("tenants", "certificates", "pools", "routes", "alert_channels"):
        assert data[section], f"the fixture has no {section}"
    # every field of every object away from its default, so none can be lost unseen
    defaults = document.read({"switchyard": 1, "pools": [{"name": "x", "targets": []}]}, None)[0]
    pool_defaults = defaults.sections["pools"][0].item
    full_pool = item(data, "pools", "backend", "full")
    assert [f for f in document.POOL_FIELDS if full_pool[f] == pool_defaults[f]] == ["sticky_cookie"]
    assert item(data, "pools", "sticky", "full")["sticky_cookie"] == "srv"   # not with consistent_hash
    assert [f for f in full_pool["health_check"] if full_pool["health_check"][f] == pool_defaults["health_check"][f]] \
        == []
    with_keys = exported(passphrase=PASSPHRASE)
    assert "webhook-s3cret" not in with_keys and "secret: sealed:" in with_keys
    assert "BEGIN PRIVATE KEY" not in with_keys and "BEGIN ENCRYPTED PRIVATE KEY" in with_keys
    keys_before = stored_keys()

    empty_installation()
    result = apply(with_keys, note="rebuild")
    assert result.ok, result.problems

    assert exported() == before
    assert AlertChannel.objects.get(name="hook").secret == "webhook-s3cret"
    assert stored_keys() == keys_before
    assert Certificate.objects.get(name="acme-shop").source == Certificate.ACME
    again = apply(with_keys)
    assert again.ok and again.changes == [], [str(c) for c in again.changes]


def test_a_sealed_secret_needs_the_passphrase_it_was_sealed_with(everything):
    text = exported(passphrase=PASSPHRASE)
    refused = apply(text, passphrase=b"not the passphrase")
    assert not refused.ok
    assert any(p.object == "alert channel full/hook" and p.path.endswith(".secret") for p in refused.problems), \
        refused.problems


def test_access_lists_are_exported_by_name_and_routes_refer_to_them(everything):
    data = as_data(exported())
    office = item(data, "access_lists", "office", "full")
    assert office == {"tenant": "full", "name": "office", "default": "deny", "rules": [
        {"action": "deny", "cidr": "203.0.113.9/32"}, {"action": "allow", "cidr": "203.0.113.0/24"},
        {"action": "allow", "cidr": "2001:db8::/32"}]}
    api = item(data, "routes", "api", "full")
    assert (api["access_list"], api["maintenance"], api["retry_after"]) == ("office", True, 90)
    # a file that names an access list the owner does not have is refused, naming the field
    api["access_list"] = "nowhere"
    refused = apply(as_text(data))
    assert not refused.ok
    assert any(p.path.endswith(".access_list") and "no access_list named nowhere" in p.message
               for p in refused.problems), refused.problems
