"""Probe a target or a URL from a node: DNS, TCP, TLS and HTTP, each timed.

The tenant's upstream address policy applies on the control plane first; the node
checks it again against the addresses it resolves.
"""
from __future__ import annotations

import re
import secrets
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import async_to_sync
from django.core.exceptions import ValidationError
from django.http import Http404

from controlplane.proxy.models import Target
from controlplane.publishing.models import Node
from controlplane.tenancy.access import Principal
from controlplane.tenancy.models import Tenant
from controlplane.tenancy.upstream_policy import check_target
from dataplane import schema

from .access import bounded, int_or_404, require_level
from .nodes import pick_node, run_on_node

PROBE_TIMEOUT = 5.0
UNSAFE_IN_URL = re.compile(r"[\s\x00-\x1f]")


def _tenant_for_probe(p: Principal, slug: str | None) -> Tenant | None:
    if slug:
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None or not (p.staff or tenant.pk in p.tenant_ids):
            raise Http404("no such tenant")
        return tenant
    if p.staff:
        return None
    ids = sorted(p.tenant_ids)
    if len(ids) != 1:
        raise ValidationError({"tenant": ["you belong to several tenants: name the one whose "
                                          "upstream policy applies"]})
    return Tenant.objects.get(pk=ids[0])


def policy_of(tenant: Tenant | None) -> dict:
    if tenant is None:
        return {"restricted": False, "allowed_networks": []}
    return {"restricted": True, "allowed_networks": list(tenant.allowed_networks or [])}


def _check_policy(host: str, port: int, tenant: Tenant | None, field: str) -> None:
    """The tenant's upstream policy on the control plane (the node checks again)."""
    if tenant is None:
        return
    problems = check_target(host, tenant.allowed_networks or [], port=port)
    if problems:
        raise ValidationError({field: problems})


def _target_probe(p: Principal, data: dict, msg: dict) -> tuple[Tenant | None, dict]:
    """Probe a pool's target as the pool reaches it (scheme, TLS settings, check path
    and host). Returns the tenant whose policy applies and what was probed."""
    target = p.get_or_404(Target.objects.select_related("pool", "pool__tenant"),
                          field_name="pool__tenant", pk=int_or_404(data["target"]))
    require_level(p, target.pool.tenant, "edit")
    pool = target.pool
    tenant = pool.tenant if pool.tenant_id else None
    path = str(data.get("path") or (pool.health_check_path if pool.health_check_enabled else "/") or "/")
    if not path.startswith("/") or UNSAFE_IN_URL.search(path):
        raise ValidationError({"path": ["must start with / and contain no spaces"]})
    scheme = "https" if pool.tls_enabled else "http"
    host = f"[{target.host}]" if ":" in target.host else target.host
    msg["url"] = f"{scheme}://{host}:{target.port}{path}"
    msg["sni"] = pool.tls_sni or ""
    msg["ca_pem"] = pool.tls_ca_pem or ""
    msg["insecure"] = msg["insecure"] or (pool.tls_enabled and not pool.tls_verify)
    if pool.health_check_enabled and pool.health_check_host:
        msg["host_header"] = pool.health_check_host
    _check_policy(target.host, target.port, tenant, "target")
    return tenant, {"target": {"id": target.id, "host": target.host, "port": target.port,
                               "pool": pool.id, "pool_name": pool.name}}


def _url_probe(p: Principal, data: dict, msg: dict) -> Tenant | None:
    """Probe any http(s) URL, under the policy of the tenant named (or the only one)."""
    url = str(data.get("url") or "").strip()
    try:
        u = urlsplit(url)
        host = u.hostname
        u.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValidationError({"url": ["is not a valid URL"]}) from None
    if u.scheme not in ("http", "https") or not host or len(url) > 2048 or UNSAFE_IN_URL.search(url):
        raise ValidationError({"url": ["must be an http:// or https:// URL with a host"]})
    tenant = _tenant_for_probe(p, data.get("tenant"))
    if tenant is not None:
        require_level(p, tenant, "edit")
    _check_policy(host, u.port or (443 if u.scheme == "https" else 80), tenant, "url")
    msg["url"] = url
    msg["sni"] = str(data.get("sni") or "")[:253]
    return tenant


def prepare_probe(p: Principal, data: dict) -> tuple[Node, dict, dict]:
    """(node, message, context) for a probe of ``data["target"]`` (a target id, with the
    pool's TLS settings) or ``data["url"]``."""
    timeout = bounded(data.get("timeout"), PROBE_TIMEOUT, 0.1, 60.0, "timeout", float)
    msg: dict[str, Any] = {"type": schema.MSG_PROBE, "id": secrets.token_hex(8), "timeout": timeout,
                           "insecure": bool(data.get("insecure")), "sni": "", "ca_pem": "",
                           "method": "GET"}
    context: dict[str, Any] = {}
    if data.get("target") not in (None, ""):
        tenant, context = _target_probe(p, data, msg)
    else:
        tenant = _url_probe(p, data, msg)
    msg["policy"] = policy_of(tenant)
    context["policy"] = msg["policy"]
    node = pick_node(p, data.get("node"))
    return node, msg, context


def probe(p: Principal, data: dict) -> dict:
    node, msg, context = prepare_probe(p, data)
    result = async_to_sync(run_on_node)(node, msg, msg["timeout"] * 4 + 5)
    summary = "ok" if result.get("ok") else f"{result.get('failed_step')}: {result.get('error')}"
    return {"node": {"id": node.id, "name": node.name}, **context, "summary": summary,
            "result": result}
