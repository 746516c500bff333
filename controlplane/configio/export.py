"""The stored configuration as a file's mapping (``document``), in a fixed order.

Objects are sorted by owner (the platform first, then tenants by slug) and name, and
each object's fields come in the order of ``document.SPECS``, so the same
configuration always exports the same bytes. Private keys and webhook secrets are
exported only when a passphrase is given, and then encrypted with it.
"""
from __future__ import annotations

import datetime as dt

from controlplane.alerts.models import AlertChannel
from controlplane import crypto
from controlplane.proxy.models import AccessList, Certificate, Pool, Route
from controlplane.tenancy.models import Tenant

from . import keys
from .document import (CERTIFICATE_DETAILS, CHANNEL_FIELDS, FORMAT, HEALTH_CHECK, POOL_FIELDS, QUOTAS,
                       ROUTE_FIELDS, SECTIONS, key)


def export(tenant: Tenant | None = None, *, passphrase: bytes | None = None) -> dict:
    """The configuration of ``tenant`` (None: the whole platform), private keys and
    webhook secrets included (encrypted) only when ``passphrase`` is given."""
    data: dict = {"switchyard": FORMAT}
    if tenant is not None:
        data["tenant"] = tenant.slug
    for section in SECTIONS:
        data[section] = items(section, tenant, passphrase=passphrase)
    return data


def current(tenant: Tenant | None) -> dict[str, dict]:
    """What is stored now, per section, by the key objects are matched on."""
    return {section: {key(section, item): item for item in items(section, tenant)} for section in SECTIONS}


def items(section: str, tenant: Tenant | None, *, passphrase: bytes | None = None) -> list[dict]:
    if section == "tenants":
        rows = Tenant.objects.prefetch_related("delegations").order_by("slug")
        return [tenant_item(t) for t in (rows.filter(pk=tenant.pk) if tenant else rows)]
    model, build = MODELS[section]
    rows = model.objects.select_related(*RELATED.get(section, ("tenant",)))
    if tenant is not None:
        rows = rows.filter(tenant=tenant)
    if section == "pools":
        rows = rows.prefetch_related("targets")
    ordered = sorted(rows, key=lambda row: (row.tenant.slug if row.tenant_id else "", row.name, row.pk))
    if section in ("certificates", "alert_channels"):
        return [build(row, passphrase) for row in ordered]
    return [build(row) for row in ordered]


def _slug(row) -> str | None:
    return row.tenant.slug if row.tenant_id else None


def _plain(value):
    return value.isoformat() if isinstance(value, dt.datetime) else value


def tenant_item(tenant: Tenant) -> dict:
    return {
        "slug": tenant.slug,
        "name": tenant.name,
        "quotas": {q: getattr(tenant, f"max_{q}") for q in QUOTAS},
        "allowed_networks": list(tenant.allowed_networks or []),
        "delegations": sorted(d.suffix for d in tenant.delegations.all()),
        "rate_limit": tenant.rate_limit,
    }


def certificate_item(cert: Certificate, passphrase: bytes | None = None) -> dict:
    item = {"tenant": _slug(cert), "name": cert.name, "certificate_pem": cert.certificate_pem}
    if passphrase is not None:
        item["private_key_pem"] = keys.encrypt(crypto.decrypt(cert.private_key_encrypted), passphrase)
    item.update({name: _plain(getattr(cert, name)) for name in CERTIFICATE_DETAILS})
    return item


def pool_item(pool: Pool) -> dict:
    targets = sorted(pool.targets.all(), key=lambda t: (t.host, t.port))
    return {
        "tenant": _slug(pool), "name": pool.name,
        **{name: getattr(pool, name) for name in POOL_FIELDS},
        "health_check": {name: getattr(pool, model_name) for name, model_name in HEALTH_CHECK.items()},
        "targets": [{"host": t.host, "port": t.port, "weight": t.weight, "state": t.state} for t in targets],
    }


def route_item(route: Route) -> dict:
    return {
        "tenant": _slug(route), "name": route.name,
        **{name: getattr(route, name) for name in ROUTE_FIELDS},
        "pool": route.pool.name,
        "certificate": route.certificate.name if route.certificate_id else None,
        "access_list": route.access_list.name if route.access_list_id else None,
    }


def access_list_item(acl: AccessList) -> dict:
    return {"tenant": _slug(acl), "name": acl.name, "rules": [dict(r) for r in acl.rules or []],
            "default": acl.default,
            # basic auth, only for a list with users (a file without them reads as before)
            **({"users": [{"username": u.get("username"), "password_hash": u.get("password_hash")}
                          for u in acl.users if isinstance(u, dict)],  # hashes only, never a password
                "satisfy": acl.satisfy} if acl.users else {})}


def channel_item(channel: AlertChannel, passphrase: bytes | None = None) -> dict:
    item = {"tenant": _slug(channel), "name": channel.name, "kind": channel.kind,
            **{name: getattr(channel, name) for name in CHANNEL_FIELDS}}
    if passphrase is not None and channel.secret:
        item["secret"] = keys.seal(channel.secret, passphrase)
    return item


MODELS = {"certificates": (Certificate, certificate_item), "pools": (Pool, pool_item),
          "routes": (Route, route_item), "alert_channels": (AlertChannel, channel_item),
          "access_lists": (AccessList, access_list_item)}
RELATED = {"routes": ("tenant", "pool", "certificate", "access_list")}


def stored_secret(section: str, item_key) -> str | None:
    """The stored write-only value of an object (decrypted), for comparison only."""
    if section != "alert_channels":
        return None
    slug, name = item_key
    channel = AlertChannel.objects.filter(tenant__slug=slug, name=name).first() if slug else \
        AlertChannel.objects.filter(tenant__isnull=True, name=name).first()
    return channel.secret if channel is not None else None
