"""Put the routes, pools and targets rows back the way a stored snapshot describes them.

Used by ``publisher.rollback`` inside its transaction. Ids are kept (a deleted row
comes back with its old id) so that the restored rows compile to the same snapshot.
Routes absent from the snapshot are disabled, not deleted. Certificates cannot be
re-created (versions hold no private keys): a snapshot naming a deleted one is
refused. The final state goes through the same validation as any other change.
"""
from __future__ import annotations

from django.core.exceptions import ValidationError

from controlplane.proxy.models import Certificate, Pool, Route, Target
from controlplane.tenancy.models import Tenant

from . import checks

POOL_FIELDS = ("name", "algorithm", "hash_on", "hash_key", "sticky_cookie", "connect_timeout",
               "read_timeout", "retries")
ROUTE_FIELDS = ("name", "hosts", "path", "path_type", "methods", "headers", "priority", "strip_prefix",
                "preserve_host", "request_headers", "response_headers", "websocket", "https_redirect",
                "hsts_max_age", "max_body_size", "forwarded")
CHECK_FIELDS = {"type": "health_check_type", "path": "health_check_path", "method": "health_check_method",
                "expected_statuses": "health_check_expected_statuses", "host": "health_check_host",
                "interval": "health_check_interval", "timeout": "health_check_timeout",
                "healthy_threshold": "healthy_threshold", "unhealthy_threshold": "unhealthy_threshold"}


def restore_snapshot(snapshot: dict, number: int) -> None:
    tenants = _tenants(snapshot)
    _check_certificates(snapshot)
    pools = [_restore_pool(p, tenants, number) for p in snapshot.get("pools") or []]
    route_ids = [r["id"] for r in snapshot.get("routes") or []]
    Route.objects.filter(enabled=True).exclude(id__in=route_ids).update(enabled=False)
    routes = [_restore_route(r, tenants, number) for r in snapshot.get("routes") or []]
    _validate(pools, routes)


def _tenants(snapshot: dict) -> dict:
    slugs = {item.get("tenant") for key in ("pools", "routes") for item in snapshot.get(key) or []}
    slugs.discard(None)
    found = {t.slug: t for t in Tenant.objects.filter(slug__in=slugs)}
    missing = sorted(slugs - set(found))
    if missing:
        raise ValidationError({"number": [f"tenant {', '.join(missing)} no longer exists"]})
    found[None] = None
    return found


def _check_certificates(snapshot: dict) -> None:
    wanted = {c["id"]: c["name"] for c in snapshot.get("certificates") or []}
    present = set(Certificate.objects.filter(id__in=list(wanted)).values_list("id", flat=True))
    gone = [f"{name} (id {cid})" for cid, name in wanted.items() if cid not in present]
    if gone:
        raise ValidationError({"number": [f"certificate {', '.join(gone)} was deleted since; "
                                          "upload it again before rolling back"]})


def _free_name(model, tenant, name: str, keep_id: int, number: int) -> None:
    """Rename another row holding ``name`` so the restored one can take it back."""
    for other in model.objects.filter(tenant=tenant, name=name).exclude(id=keep_id):
        other.name = f"{name[:170]} (before rollback to v{number}, {other.id})"
        other.save(update_fields=["name"])


def _restore_pool(data: dict, tenants: dict, number: int):
    tenant = tenants[data.get("tenant")]
    _free_name(Pool, tenant, data["name"], data["id"], number)
    pool = Pool.objects.filter(id=data["id"]).first() or Pool(id=data["id"])
    pool.tenant = tenant
    for field in POOL_FIELDS:
        setattr(pool, field, data[field])
    # versions published before these were in the snapshot lack them: the model defaults
    pool.passive_failures = data.get("passive_failures", 5)
    pool.passive_ejection_seconds = data.get("passive_ejection_seconds", 30.0)
    tls = data.get("tls") or {}
    pool.tls_enabled, pool.tls_verify = tls.get("enabled", False), tls.get("verify", True)
    pool.tls_ca_pem, pool.tls_sni = tls.get("ca_pem", ""), tls.get("sni", "")
    check = data.get("health_check")
    pool.health_check_enabled = check is not None
    for key, field in CHECK_FIELDS.items():
        if check and key in check:
            setattr(pool, field, check[key])
    pool.save()
    _restore_targets(pool, data.get("targets") or [])
    return pool


def _restore_targets(pool, targets: list[dict]) -> None:
    keep = [t["id"] for t in targets]
    Target.objects.filter(pool=pool).exclude(id__in=keep).delete()
    for t in targets:
        Target.objects.update_or_create(
            id=t["id"], defaults={"pool": pool, "host": t["host"], "port": t["port"],
                                  "weight": t.get("weight", 1), "state": t.get("state", "enabled")})


def _restore_route(data: dict, tenants: dict, number: int):
    tenant = tenants[data.get("tenant")]
    _free_name(Route, tenant, data["name"], data["id"], number)
    route = Route.objects.filter(id=data["id"]).first() or Route(id=data["id"])
    route.tenant = tenant
    for field in ROUTE_FIELDS:
        setattr(route, field, data[field])
    route.pool_id, route.certificate_id, route.enabled = data["pool"], data.get("certificate"), True
    route.save()
    return route


def _validate(pools, routes) -> None:
    problems = []
    for pool in pools:
        problems += checks.pool_problems(f"pool {pool.name}", pool)
    for route in routes:
        problems += checks.route_problems(f"route {route.name}", route)
    if problems:
        raise ValidationError({"number": problems})
