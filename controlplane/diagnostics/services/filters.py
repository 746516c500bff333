"""The filter of a live tail, validated; a tenant's is forced to its own routes."""
from __future__ import annotations

import ipaddress
import re
from typing import Any

from django.core.exceptions import ValidationError

from controlplane.tenancy.access import Principal
from dataplane import schema

from .access import route_or_404, routes_for

TAIL_STATUS = re.compile(r"^([1-5]\d\d|[1-5]xx)$")
TAIL_CODE = re.compile(r"^[a-z0-9_\-]{1,64}$")
MAX_VALUES = 50


def _many(params: dict, key: str) -> list[str]:
    v = params.get(key)
    if v in (None, ""):
        return []
    items = v if isinstance(v, list) else str(v).split(",")
    return [str(x).strip() for x in items if str(x).strip()][:MAX_VALUES]


def _hosts(values: list[str]) -> list[str]:
    try:
        return [schema.normalize_host(h) for h in values]
    except ValueError as exc:
        raise ValidationError({"host": [str(exc)]}) from None


def _clients(values: list[str]) -> list[str]:
    for c in values:
        try:
            ipaddress.ip_network(c, strict=False)
        except ValueError:
            raise ValidationError({"client": [f"{c!r} is not an address or network"]}) from None
    return values


def tail_filter(p: Principal, params: dict) -> dict:
    """Validate a tail filter; a tenant's is forced to its own route ids."""
    f: dict[str, Any] = {}
    route_ids = [route_or_404(p, r).id for r in _many(params, "route")]
    if not p.staff:
        route_ids = route_ids or list(routes_for(p).values_list("id", flat=True))
    if route_ids or not p.staff:
        f["routes"] = route_ids
    hosts = _hosts(_many(params, "host"))
    if hosts:
        f["hosts"] = hosts
    statuses = [s.lower() for s in _many(params, "status")]
    if any(not TAIL_STATUS.match(s) for s in statuses):
        raise ValidationError({"status": ["give status codes (502) or classes (5xx)"]})
    if statuses:
        f["status"] = statuses
    codes = [c.lower() for c in _many(params, "proxy_status")]
    if any(not TAIL_CODE.match(c) for c in codes):
        raise ValidationError({"proxy_status": ["give Proxy-Status types like connection_refused"]})
    if codes:
        f["proxy_status"] = codes
    clients = _clients(_many(params, "client"))
    if clients:
        f["clients"] = clients
    return f
