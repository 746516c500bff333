"""Certificates are scoped by owner, and delegations never take platform hosts:
alpha owns alpha.example.com, beta owns beta.example.com."""
import pytest

from controlplane.proxy import services
from controlplane.proxy.models import Certificate, Route
from controlplane.tenancy.models import Delegation
from tests.controlplane.helpers import ACTOR, issue

pytestmark = pytest.mark.django_db

BASE = "/api/v1"


def upload(api, *names, tenant="alpha", name="shop"):
    pem, key = issue(*names)
    return api.post(f"{BASE}/certificates/", {"tenant": tenant, "name": name, "certificate_pem": pem,
                                              "private_key_pem": key}, format="json")


def platform_route(name: str, hosts: list[str]) -> Route:
    pool = services.create_pool(ACTOR, name=f"{name}-pool", targets=[{"host": "127.0.0.1", "port": 8080}])
    return services.create_route(ACTOR, name=name, hosts=hosts, pool=pool)


# ------------------------------------------------------------------ names inside the delegations

def test_it_refuses_a_tenant_certificate_naming_another_tenants_host(world, as_role):
    api = as_role("editor")
    r = upload(api, "www.alpha.example.com", "shop.beta.example.com", "evil.example.org")
    assert r.status_code == 400
    assert r.json() == {"certificate_pem": [
        "names shop.beta.example.com, evil.example.org, outside tenant alpha's delegations: "
        "a tenant certificate may name only hosts inside them"]}
    assert not Certificate.objects.filter(name="shop").exists()
    assert upload(api, "www.alpha.example.com", "*.alpha.example.com").status_code == 201


def test_it_refuses_a_renewal_naming_hosts_outside_the_delegations(world, as_role):
    cert = world["a"].certificate
    pem, key = issue("alpha.example.com", "*.alpha.example.com", "*.beta.example.com")
    r = as_role("editor").patch(f"{BASE}/certificates/{cert.pk}/", {"certificate_pem": pem,
                                                                    "private_key_pem": key}, format="json")
    assert r.status_code == 400
    assert r.json() == {"certificate_pem": [
        "names *.beta.example.com, outside tenant alpha's delegations: "
        "a tenant certificate may name only hosts inside them"]}
    assert Certificate.objects.get(pk=cert.pk).fingerprint == cert.fingerprint


def test_it_keeps_a_delegation_while_a_certificate_names_hosts_under_it(world, staff_api, as_role):
    r = staff_api.post(f"{BASE}/delegations/", {"tenant": "alpha", "suffix": "alpha.example.net"}, format="json")
    assert r.status_code == 201, r.json()
    delegation = r.json()["id"]
    assert upload(as_role("editor"), "shop.alpha.example.net", name="net").status_code == 201
    message = ["certificate net names shop.alpha.example.net, which only alpha.example.net covers; "
               "delete or replace it first"]
    r = staff_api.delete(f"{BASE}/delegations/{delegation}/")
    assert r.status_code == 400 and r.json() == {"suffix": message}
    r = staff_api.patch(f"{BASE}/delegations/{delegation}/", {"suffix": "alpha.example.org"}, format="json")
    assert r.status_code == 400 and r.json() == {"suffix": message}
    assert Delegation.objects.get(pk=delegation).suffix == "alpha.example.net"
    services.delete_certificate(ACTOR, Certificate.objects.get(name="net"))
    assert staff_api.delete(f"{BASE}/delegations/{delegation}/").status_code == 204


# ------------------------------------------------------------------ routes use their owner's certificates

@pytest.mark.parametrize("platform_names", [("internal.platform.test",), ("*.alpha.example.com",)])
def test_a_platform_certificate_is_an_unknown_certificate_to_a_tenant(world, as_role, platform_names):
    pem, key = issue(*platform_names)
    platform = services.create_certificate(ACTOR, name="edge-secret", certificate_pem=pem, private_key_pem=key)
    api = as_role("editor")
    body = {"tenant": "alpha", "name": "www", "hosts": ["www.alpha.example.com"], "pool": world["a"].pool.pk}
    r = api.post(f"{BASE}/routes/", {**body, "certificate": platform.pk}, format="json")
    assert r.status_code == 400
    assert r.json() == {"certificate": [f"unknown certificate {platform.pk}"]}
    missing = api.post(f"{BASE}/routes/", {**body, "certificate": platform.pk + 1000}, format="json")
    assert missing.json() == {"certificate": [f"unknown certificate {platform.pk + 1000}"]}
    assert not Route.objects.filter(name="www").exists()


def test_a_platform_route_may_not_use_a_tenant_certificate(world, staff_api):
    pool = services.create_pool(ACTOR, name="edge", targets=[{"host": "127.0.0.1", "port": 8080}])
    r = staff_api.post(f"{BASE}/routes/", {"name": "edge", "hosts": ["edge.platform.test"], "pool": pool.pk,
                                            "certificate": world["a"].certificate.pk}, format="json")
    assert r.status_code == 400
    assert r.json() == {"certificate": ["certificate alpha-cert belongs to tenant alpha; "
                                        "a route may only use a certificate of its own owner"]}


# ------------------------------------------------------------------ delegations over platform hosts

def test_it_refuses_a_delegation_over_a_platform_routes_host(world, staff_api):
    platform_route("shop", ["shop.gamma.example.com"])
    platform_route("wild", ["*.w.gamma.example.com"])
    r = staff_api.post(f"{BASE}/delegations/", {"tenant": "alpha", "suffix": "gamma.example.com"}, format="json")
    assert r.status_code == 400
    assert r.json() == {"suffix": [
        "gamma.example.com covers shop.gamma.example.com, served by platform route shop; "
        "move or delete that route first",
        "gamma.example.com covers *.w.gamma.example.com, served by platform route wild; "
        "move or delete that route first"]}
    r = staff_api.post(f"{BASE}/delegations/", {"tenant": "alpha", "suffix": "w.gamma.example.com"}, format="json")
    assert r.status_code == 400 and "platform route wild" in r.json()["suffix"][0]
    # an existing delegation may not be moved over them either
    r = staff_api.patch(f"{BASE}/delegations/{world['a'].delegation.pk}/", {"suffix": "shop.gamma.example.com"},
                        format="json")
    assert r.status_code == 400 and "platform route shop" in r.json()["suffix"][0]
    assert not Delegation.objects.filter(suffix__endswith="gamma.example.com").exists()
    # a platform wildcard above the suffix stays the catch-all for names alpha does not route
    platform_route("catch-all", ["*.example.org"])
    r = staff_api.post(f"{BASE}/delegations/", {"tenant": "alpha", "suffix": "shop.example.org"}, format="json")
    assert r.status_code == 201, r.json()
