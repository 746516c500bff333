"""Diagnostics services (SPEC 9), used by the API views and meant for the dashboard.

Every function takes a ``Principal`` (``controlplane.tenancy.access``) and scopes
with it: platform staff see everything, a tenant member only its tenants' routes,
targets and certificates; anything else is ``Http404``. Nodes are platform objects:
their status is for staff; a tenant may still *use* a node (probe from it, tail or
capture on it) for its own routes, and see per-node error figures of its own routes.

Node round trips are async (``relay``); the ``*_sync`` wrappers run them from sync
code (DRF views under Daphne run in a worker thread; ``async_to_sync`` hops back to
the event loop that owns the channel layer).
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import re
import secrets
import time
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.http import Http404
from django.utils import timezone

from controlplane.diagnostics import relay
from controlplane.diagnostics.explanations import explain
from controlplane.diagnostics.models import CaptureSession, CapturedRequest, NodeRuntime
from controlplane.proxy.models import Certificate, Pool, Route, Target
from controlplane.publishing.models import ConfigVersion, Node, NodeEvent
from controlplane.tenancy.access import ROLE_RANK, Principal
from controlplane.tenancy.models import Delegation, Membership, Tenant
from dataplane import schema

API = "/api/v1/diagnostics"
PROBE_TIMEOUT = 5.0
CAPTURE_DEFAULT_SECONDS = 300
CAPTURE_MAX_SECONDS = 900
CAPTURE_RETENTION = dt.timedelta(hours=24)
EVENTS_SHOWN = 10


class Conflict(Exception):
    """The request cannot be served now (node not connected): HTTP 409 / 503."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


class Forbidden(Exception):
    """Visible, but the role is too low: HTTP 403."""


# ---------------------------------------------------------------- scoping

def routes_for(p: Principal):
    qs = Route.objects.select_related("tenant", "pool")
    return qs if p.staff else qs.filter(tenant_id__in=list(p.tenant_ids))


def route_or_404(p: Principal, pk: Any) -> Route:
    return p.get_or_404(Route.objects.select_related("tenant", "pool"), pk=_int_or_404(pk))


def _int_or_404(value: Any) -> int:
    try:
        n = int(value)
        if not 0 < n < 2 ** 31:
            raise ValueError
        return n
    except (TypeError, ValueError):
        raise Http404("not found") from None


def node_or_404(p: Principal, ref: Any, staff_only: bool = False) -> Node:
    """A node by id or name. Status is staff-only; others may only name a node to use."""
    if staff_only and not p.staff:
        raise Http404("not found")
    if p.user is None or not getattr(p.user, "is_authenticated", False):
        raise Http404("not found")
    qs = Node.objects.filter(revoked=False)
    node = None
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        node = qs.filter(pk=int(ref)).first()
    if node is None and isinstance(ref, str):
        node = qs.filter(name=ref).first()
    if node is None:
        raise Http404("no such node")
    return node


def require_level(p: Principal, tenant, level: str) -> None:
    """``view`` or ``edit`` on ``tenant`` (None: platform objects, staff only)."""
    if p.staff:
        return
    role = p.role(tenant) if tenant is not None else None
    need = ROLE_RANK[Membership.EDITOR] if level == "edit" else ROLE_RANK[Membership.VIEWER]
    if ROLE_RANK.get(role, 0) < need:
        raise Forbidden("needs the editor or owner role in this tenant" if level == "edit"
                        else "not a member of this tenant")


def pick_node(p: Principal, ref: Any = None) -> Node:
    """The node to run a command on: the one named, else a connected one."""
    if ref not in (None, ""):
        node = node_or_404(p, ref)
        if not node.connected:
            raise Conflict(f"node {node.name} is not connected; it cannot run diagnostics now")
        return node
    node = Node.objects.filter(revoked=False, connected=True).order_by("-last_seen", "name").first()
    if node is None:
        raise Conflict("no data-plane node is connected", status=503)
    return node


# ---------------------------------------------------------------- 1. node and config status

def record_runtime(node_id: int, started: float) -> None:
    when = dt.datetime.fromtimestamp(started, tz=dt.timezone.utc)
    NodeRuntime.objects.update_or_create(node_id=node_id, defaults={"started": when})


def _iso(value):
    return value.isoformat() if value else None


def node_status(node: Node, latest: ConfigVersion | None = ..., now=None) -> dict:
    now = now or timezone.now()
    if latest is ...:
        latest = ConfigVersion.objects.order_by("-number").only("number", "sha256").first()
    runtime = NodeRuntime.objects.filter(node=node).first()
    started = runtime.started if runtime else None
    in_sync = bool(latest and node.applied_hash == latest.sha256)
    nack = None
    if node.rejected_version is not None or node.last_error:
        nack = {"version": node.rejected_version, "hash": node.rejected_hash or None,
                "at": _iso(node.last_error_at), "errors": node.last_error or [],
                # a NACK older than the last ACK of a newer version is history
                "current": bool(latest and node.rejected_version == latest.number)}
    events = [{"kind": e.kind, "version": e.version, "hash": e.sha256, "at": _iso(e.created),
               "apply_ms": e.apply_ms, "errors": e.errors}
              for e in NodeEvent.objects.filter(node=node).order_by("-id")[:EVENTS_SHOWN]]
    if not node.connected:
        state = "disconnected"
    elif latest is None:
        state = "no configuration published yet"
    elif in_sync:
        state = "in sync"
    elif nack and nack["current"]:
        state = "rejected the current version"
    else:
        state = "applying or behind"
    return {
        "id": node.id, "name": node.name, "connected": node.connected, "revoked": node.revoked,
        "state": state,
        "software_version": node.software_version or None, "workers": node.workers,
        "started": _iso(started),
        "uptime_seconds": round((now - started).total_seconds(), 1)
        if started and node.connected else None,
        "connected_since": _iso(node.connected_since),
        "connection_uptime_seconds": round((now - node.connected_since).total_seconds(), 1)
        if node.connected and node.connected_since else None,
        "last_seen": _iso(node.last_seen),
        "applied": {"version": node.applied_version, "hash": node.applied_hash or None},
        "current": {"version": latest.number if latest else None,
                    "hash": latest.sha256 if latest else None},
        "in_sync": in_sync,
        "last_ack": {"at": _iso(node.last_ack), "version": node.applied_version,
                     "apply_ms": node.last_apply_ms} if node.last_ack else None,
        "last_nack": nack,
        "events": events,
        "links": {"self": f"{API}/nodes/{node.id}/", "errors": f"{API}/nodes/{node.id}/errors/",
                  "tail": f"{API}/tail/?node={node.id}"},
    }


def nodes_status(p: Principal) -> list[dict]:
    if not p.staff:
        # a tenant may pick a node for probes and tails: names and connection only
        return [{"id": n.id, "name": n.name, "connected": n.connected}
                for n in Node.objects.filter(revoked=False).order_by("name")]
    latest = ConfigVersion.objects.order_by("-number").only("number", "sha256").first()
    return [node_status(n, latest) for n in Node.objects.order_by("name")]


def config_check(schema_only: bool = False) -> dict:
    """``manage.py checkconfig`` as data: the problems, each naming its object."""
    from controlplane.publishing import compiler
    from controlplane.publishing.management.commands.checkconfig import Command
    cmd = Command()
    snapshot = compiler.compile_snapshot()
    problems = cmd.schema_problems(snapshot)
    if not schema_only:
        problems += cmd.business_problems()
    latest = ConfigVersion.objects.order_by("-number").only("number", "sha256").first()
    digest = schema.snapshot_hash(snapshot)
    return {"ok": not problems, "problems": problems, "sha256": digest,
            "published": bool(latest and latest.sha256 == digest),
            "current_version": latest.number if latest else None}


# ---------------------------------------------------------------- 3. probe

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
    from controlplane.tenancy.upstream_policy import check_target
    problems = check_target(host, tenant.allowed_networks or [], port=port)
    if problems:
        raise ValidationError({field: problems})


def prepare_probe(p: Principal, data: dict) -> tuple[Node, dict, dict]:
    """(node, message, context) for a probe of ``data["target"]`` (a target id, with the
    pool's TLS settings) or ``data["url"]``."""
    timeout = _float(data.get("timeout"), PROBE_TIMEOUT, 0.1, 60.0, "timeout")
    msg: dict[str, Any] = {"type": schema.MSG_PROBE, "id": secrets.token_hex(8), "timeout": timeout,
                           "insecure": bool(data.get("insecure")), "sni": "", "ca_pem": "",
                           "method": "GET"}
    context: dict[str, Any] = {}
    if data.get("target") not in (None, ""):
        target = p.get_or_404(Target.objects.select_related("pool", "pool__tenant"),
                              field_name="pool__tenant", pk=_int_or_404(data["target"]))
        require_level(p, target.pool.tenant, "edit")
        pool = target.pool
        tenant = pool.tenant if pool.tenant_id else None
        path = str(data.get("path") or (pool.health_check_path if pool.health_check_enabled
                                        else "/") or "/")
        if not path.startswith("/") or re.search(r"[\s\x00-\x1f]", path):
            raise ValidationError({"path": ["must start with / and contain no spaces"]})
        scheme = "https" if pool.tls_enabled else "http"
        host = f"[{target.host}]" if ":" in target.host else target.host
        msg["url"] = f"{scheme}://{host}:{target.port}{path}"
        msg["sni"] = pool.tls_sni or ""
        msg["ca_pem"] = pool.tls_ca_pem or ""
        msg["insecure"] = msg["insecure"] or (pool.tls_enabled and not pool.tls_verify)
        if pool.health_check_enabled and pool.health_check_host:
            msg["host_header"] = pool.health_check_host
        context.update(target={"id": target.id, "host": target.host, "port": target.port,
                               "pool": pool.id, "pool_name": pool.name})
        _check_policy(target.host, target.port, tenant, "target")
    else:
        url = str(data.get("url") or "").strip()
        from urllib.parse import urlsplit
        try:
            u = urlsplit(url)
            host = u.hostname
            u.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValidationError({"url": ["is not a valid URL"]}) from None
        if u.scheme not in ("http", "https") or not host or len(url) > 2048 \
                or re.search(r"[\s\x00-\x1f]", url):
            raise ValidationError({"url": ["must be an http:// or https:// URL with a host"]})
        tenant = _tenant_for_probe(p, data.get("tenant"))
        if tenant is not None:
            require_level(p, tenant, "edit")
        _check_policy(host, u.port or (443 if u.scheme == "https" else 80), tenant, "url")
        msg["url"] = url
        msg["sni"] = str(data.get("sni") or "")[:253]
    msg["policy"] = policy_of(tenant)
    context["policy"] = msg["policy"]
    node = pick_node(p, data.get("node"))
    return node, msg, context


async def run_on_node(node: Node, msg: dict, timeout: float) -> dict:
    try:
        reply = await relay.node_request(node.id, msg, timeout)
    except relay.NodeTimeout:
        raise Conflict(f"node {node.name} did not answer within {timeout:g} s", status=504) from None
    result = reply.get("result")
    return result if isinstance(result, dict) else {"ok": False, "error": "no result"}


def probe(p: Principal, data: dict) -> dict:
    from asgiref.sync import async_to_sync
    node, msg, context = prepare_probe(p, data)
    result = async_to_sync(run_on_node)(node, msg, msg["timeout"] * 4 + 5)
    summary = "ok" if result.get("ok") else f"{result.get('failed_step')}: {result.get('error')}"
    return {"node": {"id": node.id, "name": node.name}, **context, "summary": summary,
            "result": result}


# ---------------------------------------------------------------- 4. TLS

def _covers(suffix_or_host: str, name: str) -> bool:
    if suffix_or_host.startswith("*."):
        parent = name.split(".", 1)[1] if "." in name else ""
        return parent == suffix_or_host[2:]
    return name == suffix_or_host


def _sni_allowed(p: Principal, sni: str) -> bool:
    if p.staff:
        return True
    ids = list(p.tenant_ids)
    for d in Delegation.objects.filter(tenant_id__in=ids).values_list("suffix", flat=True):
        if sni == d or sni.endswith("." + d):
            return True
    for hosts in Route.objects.filter(tenant_id__in=ids).values_list("hosts", flat=True):
        if any(isinstance(h, str) and _covers(h, sni) for h in hosts or ()):
            return True
    return False


def chain_report(pem_text: str, hosts: tuple = ()) -> dict:
    from controlplane.certs.pem import CHAIN_COMPLETE, inspect_pem
    from controlplane.certs.services import trusted_bundle
    report = inspect_pem(pem_text, hosts=hosts, ca_bundle_pem=trusted_bundle())
    missing = [w for w in report.warnings if w.startswith("incomplete chain")]
    return {"subject": report.subject, "issuer": report.issuer, "sans": report.sans,
            "not_before": _iso(report.not_before), "not_after": _iso(report.not_after),
            "fingerprint": report.fingerprint, "chain_status": report.chain_status,
            "complete": report.chain_status == CHAIN_COMPLETE,
            "missing_intermediate": missing[0] if missing else None,
            "chain": report.chain, "warnings": report.warnings,
            "errors": [f"{k}: {m}" for k, ms in report.errors.items() for m in ms]}


def tls_check(p: Principal, data: dict) -> dict:
    from asgiref.sync import async_to_sync
    from dataplane.schema import normalize_host
    try:
        sni = normalize_host(str(data.get("sni") or ""))
        if sni.startswith("*."):
            raise ValueError("give a concrete name, not a wildcard")
    except ValueError as exc:
        raise ValidationError({"sni": [str(exc)]}) from None
    if not _sni_allowed(p, sni):
        raise Http404("no route or delegation of yours covers this name")
    timeout = _float(data.get("timeout"), PROBE_TIMEOUT, 0.1, 60.0, "timeout")
    node = pick_node(p, data.get("node"))
    msg = {"type": schema.MSG_TLS_CHECK, "id": secrets.token_hex(8), "sni": sni, "timeout": timeout}
    result = async_to_sync(run_on_node)(node, msg, timeout * 4 + 5)
    tls = result.get("tls") or {}
    chain = tls.get("chain") or []
    out: dict[str, Any] = {"node": {"id": node.id, "name": node.name}, "sni": sni,
                           "handshake": {k: tls.get(k) for k in ("ok", "version", "cipher", "alpn",
                                                                  "time_ms", "error")},
                           "presented": [{k: c.get(k) for k in ("subject", "issuer", "not_after",
                                                                 "sans")} for c in chain],
                           "report": None, "stored_certificate": None,
                           "error": None if tls.get("ok") else result.get("error")}
    pems = "".join(c.get("pem") or "" for c in chain)
    if pems:
        out["report"] = chain_report(pems, hosts=(sni,))
        fp = out["report"]["fingerprint"]
        stored = Certificate.objects.filter(fingerprint=fp)
        if not p.staff:
            stored = stored.filter(Q(tenant_id__in=list(p.tenant_ids)))
        cert = stored.first()
        if cert is not None:
            out["stored_certificate"] = {"id": cert.id, "name": cert.name,
                                         "chain_report": f"{API}/certificates/{cert.id}/chain/"}
    http = result.get("http") or {}
    if http:
        out["http"] = {k: http.get(k) for k in ("status", "reason", "ttfb_ms", "error")}
    return out


def certificate_chain(p: Principal, pk: Any) -> dict:
    cert = p.get_or_404(Certificate.objects.select_related("tenant"), pk=_int_or_404(pk))
    hosts = sorted({h for r in Route.objects.filter(certificate=cert)
                    for h in (r.hosts or []) if isinstance(h, str)})
    report = chain_report(cert.certificate_pem, hosts=tuple(hosts))
    return {"certificate": {"id": cert.id, "name": cert.name,
                            "tenant": cert.tenant.slug if cert.tenant_id else None},
            "hosts_checked": hosts, **report}


# ---------------------------------------------------------------- 5. request inspector

def purge_expired() -> None:
    now = timezone.now()
    CapturedRequest.objects.filter(expires__lte=now).delete()
    CaptureSession.objects.filter(expires__lte=now - CAPTURE_RETENTION).delete()


def _epoch(when: dt.datetime) -> float:
    return round(when.timestamp(), 3)


def arm_capture(p: Principal, route_pk: Any, data: dict, actor: str = "") -> dict:
    from asgiref.sync import async_to_sync
    route = route_or_404(p, route_pk)
    require_level(p, route.tenant if route.tenant_id else None, "edit")
    count = _int(data.get("count"), 5, 1, schema.MAX_CAPTURE_COUNT, "count")
    seconds = _int(data.get("seconds"), CAPTURE_DEFAULT_SECONDS, 5, CAPTURE_MAX_SECONDS, "seconds")
    node = None
    if data.get("node") not in (None, ""):
        node = pick_node(p, data.get("node"))
    elif not Node.objects.filter(revoked=False, connected=True).exists():
        raise Conflict("no data-plane node is connected", status=503)
    purge_expired()
    session = CaptureSession.objects.create(
        route=route, tenant=route.tenant if route.tenant_id else None, node=node, count=count,
        created_by=actor[:200], expires=timezone.now() + dt.timedelta(seconds=seconds))
    msg = {"type": schema.MSG_CAPTURE_START, "id": session.id.hex, "route": route.id,
           "count": count, "expires": _epoch(session.expires)}
    async_to_sync(relay.node_command)(node.id if node else None, msg)
    return capture_session(p, session.id)


def _session_or_404(p: Principal, sid: Any) -> CaptureSession:
    try:
        import uuid
        key = uuid.UUID(str(sid))
    except ValueError:
        raise Http404("not found") from None
    qs = CaptureSession.objects.select_related("route", "node")
    return p.get_or_404(qs, pk=key)


def capture_session(p: Principal, sid: Any) -> dict:
    s = _session_or_404(p, sid)
    records = list(CapturedRequest.objects.filter(session=s).select_related("node")
                   .order_by("created", "id"))
    now = timezone.now()
    return {"id": s.id.hex, "route": {"id": s.route_id, "name": s.route.name},
            "node": s.node.name if s.node else None, "count": s.count, "synthetic": s.synthetic,
            "created": _iso(s.created), "expires": _iso(s.expires),
            "active": not s.stopped and s.expires > now and len(records) < s.count,
            "captured": len(records), "requests": [_record(r) for r in records],
            "links": {"self": f"{API}/captures/{s.id.hex}/"}}


def _record(r: CapturedRequest) -> dict:
    return {"id": r.id, "node": r.node.name if r.node else None, "created": _iso(r.created),
            **r.data}


def stop_capture(p: Principal, sid: Any) -> dict:
    from asgiref.sync import async_to_sync
    s = _session_or_404(p, sid)
    require_level(p, s.tenant, "edit")
    CaptureSession.objects.filter(pk=s.pk).update(stopped=True)
    async_to_sync(relay.node_command)(s.node_id, {"type": schema.MSG_CAPTURE_STOP, "id": s.id.hex})
    return capture_session(p, sid)


def route_captures(p: Principal, route_pk: Any, limit: int = 50) -> dict:
    route = route_or_404(p, route_pk)
    purge_expired()
    rows = CapturedRequest.objects.filter(route=route).select_related("node")[:max(1, min(limit, 200))]
    sessions = CaptureSession.objects.filter(route=route, stopped=False, expires__gt=timezone.now())
    return {"route": {"id": route.id, "name": route.name},
            "armed": [{"id": s.id.hex, "count": s.count, "expires": _iso(s.expires)} for s in sessions],
            "requests": [_record(r) for r in rows]}


def store_capture(node_id: int, sid: str, record: dict) -> bool:
    """A ``capture.record`` from a node: kept only for an existing, unexpired session of
    that route, at most ``count`` per session."""
    import uuid
    try:
        key = uuid.UUID(sid)
    except ValueError:
        return False
    with transaction.atomic():
        s = CaptureSession.objects.select_for_update().filter(pk=key).first()
        now = timezone.now()
        if s is None or s.expires <= now - dt.timedelta(seconds=30):
            return False
        if record.get("route_id") != s.route_id or (s.node_id and s.node_id != node_id):
            return False
        if CapturedRequest.objects.filter(session=s).count() >= s.count:
            return False
        CapturedRequest.objects.create(session=s, route_id=s.route_id, tenant_id=s.tenant_id,
                                       node_id=node_id, data=record,
                                       expires=now + CAPTURE_RETENTION)
    return True


def _request_host(value: Any) -> str:
    """The host of a synthetic request: one host name (normalised), never a wildcard
    nor anything else a Host header may not carry (CR/LF, spaces, ...)."""
    if not isinstance(value, str):
        raise ValidationError({"host": ["must be a host name (a string)"]})
    try:
        host = schema.normalize_host(value)
    except ValueError as exc:
        raise ValidationError({"host": [str(exc)]}) from None
    if host.startswith("*."):
        raise ValidationError({"host": ["must be one host name, not a wildcard"]})
    return host


def synthetic_request(p: Principal, route_pk: Any, data: dict, actor: str = "") -> dict:
    from asgiref.sync import async_to_sync
    route = route_or_404(p, route_pk)
    require_level(p, route.tenant if route.tenant_id else None, "edit")
    hosts = [h for h in (route.hosts or []) if isinstance(h, str)]
    host = _request_host(data["host"]) if data.get("host") else ""
    if not host:
        exact = [h for h in hosts if not h.startswith("*.")]
        host = exact[0] if exact else ("test." + hosts[0][2:] if hosts else "")
    if not any(_covers(h, host) for h in hosts):
        raise ValidationError({"host": [f"{host!r} is not a host of route {route.name}"]})
    default_path = route.path if route.path_type in ("prefix", "exact") else "/"
    path = str(data.get("path") or default_path)
    if not path.startswith("/") or len(path) > 2048 or re.search(r"[\s\x00-\x1f]", path):
        raise ValidationError({"path": ["must start with / and contain no spaces"]})
    method = str(data.get("method") or "GET").upper()
    if method not in schema.METHODS or method == "CONNECT":
        raise ValidationError({"method": ["is not an HTTP method the proxy forwards"]})
    headers = data.get("headers") or {}
    if isinstance(headers, dict):
        headers = list(headers.items())
    if not isinstance(headers, list) or len(headers) > 30:
        raise ValidationError({"headers": ["must be an object of at most 30 headers"]})
    clean = []
    for item in headers:
        if not (isinstance(item, (list, tuple)) and len(item) == 2):
            raise ValidationError({"headers": ["must be an object of name: value"]})
        name, value = str(item[0]), str(item[1])
        if not schema.HEADER_NAME.match(name) or schema.FORBIDDEN_VALUE_CHARS.search(value):
            raise ValidationError({"headers": [f"invalid header {name!r}"]})
        clean.append([name, value])
    node = pick_node(p, data.get("node"))
    session = CaptureSession.objects.create(
        route=route, tenant=route.tenant if route.tenant_id else None, node=node, count=1,
        synthetic=True, created_by=actor[:200], expires=timezone.now() + dt.timedelta(minutes=5))
    msg = {"type": schema.MSG_SYNTHETIC, "id": session.id.hex, "route": route.id, "host": host,
           "path": path, "method": method, "headers": clean, "timeout": 10.0}
    result = async_to_sync(run_on_node)(node, msg, 30.0)
    return {"node": {"id": node.id, "name": node.name}, "capture_session": session.id.hex,
            "request": {"host": host, "path": path, "method": method},
            "links": {"capture": f"{API}/captures/{session.id.hex}/"}, **result}


# ---------------------------------------------------------------- 6 + 7. why 502/504, latency

def _links(route: Route, code: str) -> dict:
    links: dict[str, Any] = {"tail": f"{API}/tail/?route={route.id}&proxy_status={code}"}
    if code in ("connection_refused", "connection_timeout", "dns_error", "http_response_timeout",
                "destination_ip_prohibited", "destination_ip_unroutable", "tls_protocol_error",
                "tls_certificate_error", "http_protocol_error", "connection_terminated",
                "destination_unavailable", "http_response_incomplete"):
        links["probe"] = [{"method": "POST", "url": f"{API}/probe/", "body": {"target": t.id},
                           "target": f"{t.host}:{t.port}"}
                          for t in route.pool.targets.order_by("id")[:20]]
    if code in ("http_request_error", "bad_request", "misdirected_request", "websocket_denied",
                "http_request_denied"):
        links["inspect"] = {"method": "POST", "url": f"{API}/routes/{route.id}/capture/",
                            "body": {"count": 5}}
    return links


def latency_verdict(total: dict, upstream: dict, timeouts: int = 0) -> str:
    """Is the slowness the backend's or the proxy's? ``timeouts``: http_response_timeout
    count in the window (those requests have no upstream time: no headers came)."""
    t50, t95, u50, u95 = total.get("p50"), total.get("p95"), upstream.get("p50"), upstream.get("p95")
    if t95 is None:
        return "no traffic in this window"
    answered = ""
    if u50 is not None:
        answered = (f"; of the answered requests, waiting for the upstream's response headers "
                    f"takes {u50:.3f} s of {t50:.3f} s at p50 (p95 {u95:.3f} s of {t95:.3f} s)")
    if timeouts:
        return (f"the backend is slow: {timeouts} request(s) got no response headers within the "
                f"pool's read_timeout{answered}; look at the backend before raising the timeout")
    if u95 is None:
        return ("no upstream response headers were received: the time is spent in connecting "
                "or in errors (see the breakdown)")
    if u95 >= 0.8 * t95 or (u50 is not None and t50 and u50 >= 0.8 * t50 and u95 >= 0.5 * t95):
        return f"the backend is slow: the proxy adds little{answered}"
    return (f"the time is spent outside the upstream's response headers (body transfer, slow "
            f"clients, retries or the proxy itself){answered}")


def _latency(summary: dict) -> dict:
    total, upstream = summary["latency"], summary["upstream_latency"]
    overhead = {k: (round(total[k] - upstream[k], 6) if total.get(k) is not None
                    and upstream.get(k) is not None else None) for k in ("p50", "p95", "p99")}
    timeouts = sum(e["count"] for e in summary["errors_by_type"] if e["type"] == "http_response_timeout")
    return {"total": total, "upstream": upstream, "difference": overhead,
            "verdict": latency_verdict(total, upstream, timeouts)}


def _series(points: list[dict]) -> list[dict]:
    return [{"minute": _iso(pt["minute"]), "ts": pt["ts"], "partial": pt["partial"],
             "requests": pt["requests"], "errors": pt["errors"],
             "by_proxy_status": pt["by_proxy_status"]} for pt in points]


def _errors(summary: dict, route: Route | None) -> list[dict]:
    out = []
    for e in summary["errors_by_type"]:
        item = {**e, "proxy_status_type": _rfc_type(e["type"]), **explain(e["type"])}
        if route is not None:
            item["links"] = _links(route, e["type"])
        out.append(item)
    return out


def _rfc_type(code: str) -> str:
    from dataplane.errors import ERRORS
    spec = ERRORS.get(code)
    return spec[1] if spec else code


def route_errors(p: Principal, route_pk: Any, minutes: int = 60) -> dict:
    from controlplane.telemetry import queries
    route = route_or_404(p, route_pk)
    minutes = max(1, min(int(minutes), 7 * 24 * 60))
    summary = queries.route_summary([route.id], minutes)
    series = queries.traffic_series([route.id], min(minutes, 24 * 60))
    return {"route": {"id": route.id, "name": route.name,
                      "tenant": route.tenant.slug if route.tenant_id else None,
                      "hosts": route.hosts, "pool": route.pool.name},
            "minutes": minutes, "requests": summary["requests"], "rps": summary["rps"],
            "error_rate": summary["error_rate"], "by_status": summary["by_status"],
            "errors_by_type": _errors(summary, route),
            "latency": _latency(summary),
            "series": _series(series),
            "links": {"tail_errors": f"{API}/tail/?route={route.id}&status=5xx",
                      "tail": f"{API}/tail/?route={route.id}",
                      "capture": f"{API}/routes/{route.id}/capture/"}}


def node_errors(p: Principal, node_ref: Any, minutes: int = 60) -> dict:
    """The same breakdown over what one node forwarded (a tenant: its own routes only)."""
    from controlplane.telemetry import queries
    from controlplane.telemetry.models import TrafficMinute
    node = node_or_404(p, node_ref)
    minutes = max(1, min(int(minutes), 7 * 24 * 60))
    now = queries.clock()
    start, current = queries._window(minutes, now)
    rows = TrafficMinute.objects.filter(node=node, minute__gte=start)
    if not p.staff:
        rows = rows.filter(tenant_id__in=list(p.tenant_ids))
    total = queries._Acc()
    per_route: dict[int, Any] = {}
    for row in rows.values(*queries._VALUES):
        total.add(row)
        acc = per_route.get(row["route_id"])
        if acc is None:
            acc = per_route[row["route_id"]] = queries._Acc()
        acc.add(row)
    seconds = queries._window_seconds(now, start, current)
    summary = queries._summary(total, seconds, minutes)
    names = dict(Route.objects.filter(pk__in=list(per_route)).values_list("id", "name"))
    routes = []
    for rid, acc in sorted(per_route.items(), key=lambda kv: -kv[1].by_status["5xx"]):
        s = queries._summary(acc, seconds, minutes)
        routes.append({"id": rid, "name": names.get(rid), "requests": s["requests"],
                       "error_rate": s["error_rate"],
                       "errors_by_type": {e["type"]: e["count"] for e in s["errors_by_type"]},
                       "links": {"errors": f"{API}/routes/{rid}/errors/"}})
    return {"node": {"id": node.id, "name": node.name, "connected": node.connected},
            "minutes": minutes, "requests": summary["requests"], "error_rate": summary["error_rate"],
            "by_status": summary["by_status"], "errors_by_type": _errors(summary, None),
            "latency": _latency(summary), "routes": routes,
            "links": {"tail": f"{API}/tail/?node={node.id}&status=5xx"}}


# ---------------------------------------------------------------- 2. tail filters

TAIL_STATUS = re.compile(r"^([1-5]\d\d|[1-5]xx)$")
TAIL_CODE = re.compile(r"^[a-z0-9_\-]{1,64}$")


def tail_filter(p: Principal, params: dict) -> dict:
    """Validate a tail filter; a tenant's is forced to its own route ids."""
    def many(key):
        v = params.get(key)
        if v in (None, ""):
            return []
        items = v if isinstance(v, list) else str(v).split(",")
        return [str(x).strip() for x in items if str(x).strip()][:50]

    f: dict[str, Any] = {}
    route_ids = []
    for r in many("route"):
        route_ids.append(route_or_404(p, r).id)
    if not p.staff:
        own = list(routes_for(p).values_list("id", flat=True))
        route_ids = route_ids or own
    if route_ids or not p.staff:
        f["routes"] = route_ids
    hosts = []
    for h in many("host"):
        try:
            hosts.append(schema.normalize_host(h))
        except ValueError as exc:
            raise ValidationError({"host": [str(exc)]}) from None
    if hosts:
        f["hosts"] = hosts
    statuses = [s.lower() for s in many("status")]
    if any(not TAIL_STATUS.match(s) for s in statuses):
        raise ValidationError({"status": ["give status codes (502) or classes (5xx)"]})
    if statuses:
        f["status"] = statuses
    codes = [c.lower() for c in many("proxy_status")]
    if any(not TAIL_CODE.match(c) for c in codes):
        raise ValidationError({"proxy_status": ["give Proxy-Status types like connection_refused"]})
    if codes:
        f["proxy_status"] = codes
    clients = many("client")
    for c in clients:
        try:
            ipaddress.ip_network(c, strict=False)
        except ValueError:
            raise ValidationError({"client": [f"{c!r} is not an address or network"]}) from None
    if clients:
        f["clients"] = clients
    return f


# ---------------------------------------------------------------- helpers

def _int(value, default, lo, hi, field):
    if value in (None, ""):
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValidationError({field: ["must be an integer"]}) from None
    if not lo <= n <= hi:
        raise ValidationError({field: [f"must be between {lo} and {hi}"]})
    return n


def _float(value, default, lo, hi, field):
    if value in (None, ""):
        return default
    try:
        n = float(value)
    except (TypeError, ValueError):
        raise ValidationError({field: ["must be a number"]}) from None
    if not lo <= n <= hi:
        raise ValidationError({field: [f"must be between {lo} and {hi}"]})
    return n
