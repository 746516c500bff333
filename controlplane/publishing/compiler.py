"""DB rows → the snapshot JSON of ``dataplane.schema`` (the one contract).

``compile_snapshot`` holds no private keys: that is what a ConfigVersion stores.
``materialize`` adds them (decrypted) just before a push. Everything is ordered
by id so that the same rows always give the same sha256.
"""
from __future__ import annotations

import copy

from controlplane import crypto, pem
from controlplane.proxy.models import AccessList, Certificate, ErrorPage, Pool, Route
from dataplane import schema

from .quarantined import left_out


# Top-level snapshot keys that apps above this one fill in (``acme_challenges``): key ->
# a function returning the section, or None to leave the key out.
SECTIONS: dict = {}
# Apps above publishing that fill in secrets of their sections, like the certificates'
# keys: called with the copy ``materialize`` returns (e.g. ACME's TLS-ALPN-01 keys).
MATERIALIZERS: list = []


def compile_snapshot() -> dict:
    """The enabled routes with the pools and certificates they use, leaving out what is
    quarantined (``quarantined.left_out``): a route, or a pool or certificate with the routes
    that need it."""
    out = left_out()
    routes = list(Route.objects.filter(enabled=True).exclude(id__in=out["route"]).exclude(pool_id__in=out["pool"])
                  .exclude(certificate_id__in=out["certificate"])
                  .exclude(access_list_id__in=out.get("accesslist", ()))
                  .select_related("tenant", "pool").order_by("id"))
    pools = _pools_of(routes)
    certs = [c for c in Certificate.objects.exclude(id__in=out["certificate"]).select_related("tenant").order_by("id")
             if _used(c, routes)]
    snapshot = {
        "schema": schema.SCHEMA_VERSION,
        "pools": [pool_dict(p, list(p.targets.order_by("id"))) for p in pools],
        "routes": [route_dict(r) for r in routes],
        "certificates": [certificate_dict(c) for c in certs],
    }
    access_lists = _access_lists_of(routes)
    if access_lists:
        snapshot["access_lists"] = [access_list_dict(a) for a in access_lists]
    tenant_limits = tenant_rate_limits(routes)
    if tenant_limits:
        snapshot["tenant_rate_limits"] = tenant_limits
    pages = platform_error_pages()
    if pages:
        snapshot["error_pages"] = pages
    for key, build in SECTIONS.items():
        section = build()
        if section:
            snapshot[key] = section
    return snapshot


def _pools_of(routes) -> list:
    ids = sorted({r.pool_id for r in routes})
    return list(Pool.objects.filter(id__in=ids).select_related("tenant").order_by("id"))


def _access_lists_of(routes) -> list:
    ids = sorted({r.access_list_id for r in routes if r.access_list_id})
    return list(AccessList.objects.filter(id__in=ids).select_related("tenant").order_by("id")) if ids else []


def access_list_dict(acl) -> dict:
    rules = acl.rules  # anything but a list of objects is left for the schema to name
    return {
        "id": acl.id or 0,
        "name": acl.name,
        "tenant": _slug(acl.tenant if acl.tenant_id else None),
        "rules": [{"action": r.get("action"), "cidr": r.get("cidr")} if isinstance(r, dict) else r
                  for r in rules] if isinstance(rules, list) else rules,
        "default": acl.default,
        # basic auth: hashes only, left out without users (a list's snapshot stays as it was)
        **({"users": [{"username": u.get("username"), "password_hash": u.get("password_hash")}
                      if isinstance(u, dict) else u for u in acl.users] if isinstance(acl.users, list)
            else acl.users, "satisfy": acl.satisfy} if acl.users else {}),
    }


def _used(cert, routes) -> bool:
    """A certificate goes to the nodes when a route names it, or when it covers a host
    of a route of the same tenant that picks its certificate by hostname (platform
    certificates serve every tenant)."""
    for route in routes:
        if route.certificate_id == cert.id:
            return True
        same_owner = cert.tenant_id is None or cert.tenant_id == route.tenant_id
        if route.certificate_id is None and same_owner and any(
                pem.covers(cert.sans, h) for h in route.hosts if isinstance(h, str)):
            return True
        if same_owner and cert.source == Certificate.ACME and _below_wildcard(cert.sans, route.hosts):
            return True  # e.g. an on-demand certificate for a name a wildcard route serves
    return False


def _below_wildcard(sans, hosts) -> bool:
    """Does a SAN lie below one of the route's ``*.`` hosts (as the node's router matches)?"""
    tails = [h[1:] for h in hosts if isinstance(h, str) and h.startswith("*.")]
    return bool(tails) and any(isinstance(s, str) and s.endswith(t) for s in sans or [] for t in tails)


def _slug(tenant) -> str | None:
    return tenant.slug if tenant is not None else None


def target_dict(target) -> dict:
    """``target`` is a Target row or a dict with host, port, weight, state (id optional)."""
    get = target.get if isinstance(target, dict) else lambda k, d=None: getattr(target, k, d)
    return {"id": get("id") or 0, "host": get("host"), "port": get("port"),
            "weight": get("weight", 1), "state": get("state", "enabled")}


def pool_dict(pool, targets) -> dict:
    tenant = pool.tenant if pool.tenant_id else None
    return {
        "id": pool.id or 0,
        "name": pool.name,
        "tenant": _slug(tenant),
        "targets": [target_dict(t) for t in targets],
        "algorithm": pool.algorithm,
        "hash_on": pool.hash_on,
        "hash_key": pool.hash_key,
        "sticky_cookie": pool.sticky_cookie,
        "connect_timeout": pool.connect_timeout,
        "read_timeout": pool.read_timeout,
        "retries": pool.retries,
        "passive_failures": pool.passive_failures,
        "passive_ejection_seconds": pool.passive_ejection_seconds,
        "tls": {"enabled": pool.tls_enabled, "verify": pool.tls_verify,
                "ca_pem": pool.tls_ca_pem, "sni": pool.tls_sni},
        "health_check": _health_check(pool),
        "policy": {"restricted": tenant is not None,
                   "allowed_networks": list(tenant.allowed_networks or []) if tenant else []},
    }


def _health_check(pool) -> dict | None:
    if not pool.health_check_enabled:
        return None
    return {
        "type": pool.health_check_type,
        "path": pool.health_check_path,
        "method": pool.health_check_method,
        "expected_statuses": pool.health_check_expected_statuses,
        "host": pool.health_check_host,
        "interval": pool.health_check_interval,
        "timeout": pool.health_check_timeout,
        "healthy_threshold": pool.healthy_threshold,
        "unhealthy_threshold": pool.unhealthy_threshold,
    }


def _rules(value):
    if not isinstance(value, dict):
        return value  # let the schema name the problem
    return {"set": value.get("set", []), "add": value.get("add", []), "remove": value.get("remove", [])}


def route_dict(route) -> dict:
    return {
        "id": route.id or 0,
        "name": route.name,
        "tenant": _slug(route.tenant if route.tenant_id else None),
        "hosts": list(route.hosts) if isinstance(route.hosts, (list, tuple)) else route.hosts,
        "pool": route.pool_id,
        "path": route.path,
        "path_type": route.path_type,
        "methods": route.methods,
        "headers": route.headers,
        "priority": route.priority,
        "strip_prefix": route.strip_prefix,
        "preserve_host": route.preserve_host,
        "request_headers": _rules(route.request_headers),
        "response_headers": _rules(route.response_headers),
        "websocket": route.websocket,
        "https_redirect": route.https_redirect,
        "hsts_max_age": route.hsts_max_age,
        "max_body_size": route.max_body_size,
        "forwarded": route.forwarded,
        "certificate": route.certificate_id,
        "access_list": route.access_list_id,
        "maintenance": route.maintenance,
        "retry_after": route.retry_after,
        **({"forward_authorization": True} if route.forward_authorization else {}),  # left out when off
        **({"error_pages": route.error_pages} if route.error_pages != {} else {}),  # left out when none
        **({"rate_limit": route.rate_limit} if route.rate_limit is not None else {}),  # left out when none
        **({"forward_auth": forward_auth_dict(route)} if route.forward_auth is not None else {}),  # same
        **({"basic_auth": route_basic_auth_dict(route)} if route.basic_auth is not None else {}),  # same
    }


def route_basic_auth_dict(route) -> dict:
    """A route's basic auth for the nodes: its realm (the route's name when empty) and
    users with hashes only."""
    ba = route.basic_auth
    if not isinstance(ba, dict):
        return ba  # let the schema name the problem
    users = ba.get("users")
    return {"realm": ba.get("realm") or route.name,
            "users": [{"username": u.get("username"), "password_hash": u.get("password_hash")}
                      if isinstance(u, dict) else u for u in users] if isinstance(users, list) else users}


def forward_auth_dict(route) -> dict:
    """A route's forward auth with its owner's upstream policy networks (a tenant's route is
    restricted on the node whatever this says; ``allowed_networks`` only widens that)."""
    fa = route.forward_auth
    if not isinstance(fa, dict):
        return fa  # let the schema name the problem
    tenant = route.tenant if route.tenant_id else None
    return {"url": fa.get("url"), "response_headers": fa.get("response_headers", []),
            "timeout": fa.get("timeout", 5.0),
            "allowed_networks": list(tenant.allowed_networks or []) if tenant else []}


def tenant_rate_limits(routes) -> list[dict]:
    """The limits of the tenants that have routes in the snapshot, by slug."""
    tenants = {r.tenant.slug: r.tenant for r in routes if r.tenant_id and r.tenant.rate_limit is not None}
    return [{"tenant": slug, "limit": tenants[slug].rate_limit} for slug in sorted(tenants)]


def platform_error_pages() -> dict:
    """The platform default error pages: {"404": "<html>…"} (dataplane.errorpages)."""
    return {str(p.status): p.body for p in ErrorPage.objects.order_by("status")}


def certificate_hosts(cert) -> list[str]:
    """The certificate's SANs as the data plane matches them (invalid names dropped)."""
    hosts = []
    for san in cert.sans or []:
        try:
            host = schema.normalize_host(san)
        except (ValueError, AttributeError):
            continue
        if host not in hosts:
            hosts.append(host)
    return hosts


def certificate_dict(cert) -> dict:
    return {
        "id": cert.id,
        "name": cert.name,
        "tenant": _slug(cert.tenant if cert.tenant_id else None),
        "hosts": certificate_hosts(cert),
        "certificate_pem": cert.certificate_pem,
        "fingerprint": cert.fingerprint,
    }


def materialize(snapshot: dict) -> dict:
    """A copy of ``snapshot`` with each certificate's private key filled in (decrypted).

    A certificate deleted since the version was made gets an empty key; a key that
    cannot be decrypted raises ``crypto.DecryptionError``.
    """
    out = copy.deepcopy(snapshot)
    ids = [c.get("id") for c in out.get("certificates") or [] if isinstance(c, dict)]
    keys = dict(Certificate.objects.filter(id__in=ids).values_list("id", "private_key_encrypted"))
    for cert in out.get("certificates") or []:
        encrypted = keys.get(cert.get("id"))
        cert["private_key_pem"] = crypto.decrypt(encrypted) if encrypted else ""
    for fill in MATERIALIZERS:
        fill(out)
    return out
