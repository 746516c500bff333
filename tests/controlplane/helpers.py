"""Shared builders for the business-layer tests (plain functions, no fixtures)."""
from __future__ import annotations

import functools

from controlplane.proxy import services
from controlplane.proxy.models import Pool, Route
from controlplane.tenancy.models import Tenant

ACTOR = services.Actor.system()
PUBLIC_IP = "93.184.216.34"  # a global address: allowed for tenant targets


def tenant(slug="shop", *suffixes, **fields) -> Tenant:
    t = services.create_tenant(ACTOR, slug=slug, name=slug.title(), **fields)
    for suffix in suffixes or (f"{slug}.example.com",):
        services.create_delegation(ACTOR, t, suffix)
    return t


def pool(name="web", owner=None, targets=None, **fields) -> Pool:
    default_host = PUBLIC_IP if owner is not None else "127.0.0.1"
    targets = targets if targets is not None else [{"host": default_host, "port": 8080}]
    return services.create_pool(ACTOR, tenant=owner, name=name, targets=targets, **fields)


def route(name="api", owner=None, hosts=None, pool_obj=None, **fields) -> Route:
    pool_obj = pool_obj or pool(f"{name}-pool", owner)
    if hosts is None:
        hosts = [f"{name}.{owner.slug}.example.com"] if owner is not None else [f"{name}.localhost"]
    return services.create_route(ACTOR, tenant=owner, name=name, hosts=hosts, pool=pool_obj, **fields)


@functools.lru_cache(maxsize=1)
def ca():
    import trustme
    return trustme.CA()


def issue(*names: str) -> tuple[str, str]:
    """(certificate_pem with chain, private_key_pem) for ``names``."""
    leaf = ca().issue_cert(*names)
    chain = "".join(p.bytes().decode() for p in leaf.cert_chain_pems)
    return chain, leaf.private_key_pem.bytes().decode()


def certificate(name="shop-cert", owner=None, names=("shop.example.com", "*.shop.example.com")):
    pem, key = issue(*names)
    return services.create_certificate(ACTOR, tenant=owner, name=name, certificate_pem=pem, private_key_pem=key)
