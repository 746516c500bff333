"""The request inspector: capture a route's next requests on the nodes, or send one
synthetic request through a node, and show what was captured."""
from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from asgiref.sync import async_to_sync
from django.core.exceptions import ValidationError
from django.http import Http404
from django.utils import timezone

from controlplane.diagnostics import relay
from controlplane.diagnostics.models import CapturedRequest, CaptureSession
from controlplane.diagnostics.store import CAPTURE_RETENTION
from controlplane.proxy.models import Route
from controlplane.publishing.models import Node
from controlplane.tenancy.access import Principal
from dataplane import schema

from .access import Conflict, bounded, require_level, route_or_404
from .links import iso, url
from .nodes import pick_node, run_on_node
from .tls import covers

CAPTURE_DEFAULT_SECONDS = 300
CAPTURE_MAX_SECONDS = 900
SYNTHETIC_SESSION = dt.timedelta(minutes=5)
SYNTHETIC_TIMEOUT = 10.0
MAX_HEADERS = 30
UNSAFE_IN_PATH = re.compile(r"[\s\x00-\x1f]")


def purge_expired() -> None:
    now = timezone.now()
    CapturedRequest.objects.filter(expires__lte=now).delete()
    CaptureSession.objects.filter(expires__lte=now - CAPTURE_RETENTION).delete()


def _owner(route: Route):
    return route.tenant if route.tenant_id else None


def arm_capture(p: Principal, route_pk: Any, data: dict, actor: str = "") -> dict:
    route = route_or_404(p, route_pk)
    require_level(p, _owner(route), "edit")
    count = bounded(data.get("count"), 5, 1, schema.MAX_CAPTURE_COUNT, "count")
    seconds = bounded(data.get("seconds"), CAPTURE_DEFAULT_SECONDS, 5, CAPTURE_MAX_SECONDS, "seconds")
    node = None
    if data.get("node") not in (None, ""):
        node = pick_node(p, data.get("node"))
    elif not Node.objects.filter(revoked=False, connected=True).exists():
        raise Conflict("no data-plane node is connected", status=503)
    purge_expired()
    session = CaptureSession.objects.create(
        route=route, tenant=_owner(route), node=node, count=count,
        created_by=actor[:200], expires=timezone.now() + dt.timedelta(seconds=seconds))
    msg = {"type": schema.MSG_CAPTURE_START, "id": session.id.hex, "route": route.id,
           "count": count, "expires": round(session.expires.timestamp(), 3)}
    async_to_sync(relay.node_command)(node.id if node else None, msg)
    return capture_session(p, session.id)


def _session_or_404(p: Principal, sid: Any) -> CaptureSession:
    try:
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
            "created": iso(s.created), "expires": iso(s.expires),
            "active": not s.stopped and s.expires > now and len(records) < s.count,
            "captured": len(records), "requests": [_record(r) for r in records],
            "links": {"self": url("capture", s.id.hex)}}


def _record(r: CapturedRequest) -> dict:
    return {"id": r.id, "node": r.node.name if r.node else None, "created": iso(r.created),
            **r.data}


def stop_capture(p: Principal, sid: Any) -> dict:
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
            "armed": [{"id": s.id.hex, "count": s.count, "expires": iso(s.expires)} for s in sessions],
            "requests": [_record(r) for r in rows]}


# ---------------------------------------------------------------- synthetic requests

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


def _host_of(route: Route, data: dict) -> str:
    """The host asked for, else the route's first exact host (or a name under its
    first wildcard); it must be one the route serves."""
    hosts = [h for h in (route.hosts or []) if isinstance(h, str)]
    host = _request_host(data["host"]) if data.get("host") else ""
    if not host:
        exact = [h for h in hosts if not h.startswith("*.")]
        host = exact[0] if exact else ("test." + hosts[0][2:] if hosts else "")
    if not any(covers(h, host) for h in hosts):
        raise ValidationError({"host": [f"{host!r} is not a host of route {route.name}"]})
    return host


def _path_of(route: Route, data: dict) -> str:
    default_path = route.path if route.path_type in ("prefix", "exact") else "/"
    path = str(data.get("path") or default_path)
    if not path.startswith("/") or len(path) > 2048 or UNSAFE_IN_PATH.search(path):
        raise ValidationError({"path": ["must start with / and contain no spaces"]})
    return path


def _method_of(data: dict) -> str:
    method = str(data.get("method") or "GET").upper()
    if method not in schema.METHODS or method == "CONNECT":
        raise ValidationError({"method": ["is not an HTTP method the proxy forwards"]})
    return method


def _headers_of(data: dict) -> list[list[str]]:
    headers = data.get("headers") or {}
    if isinstance(headers, dict):
        headers = list(headers.items())
    if not isinstance(headers, list) or len(headers) > MAX_HEADERS:
        raise ValidationError({"headers": [f"must be an object of at most {MAX_HEADERS} headers"]})
    clean = []
    for item in headers:
        if not (isinstance(item, (list, tuple)) and len(item) == 2):
            raise ValidationError({"headers": ["must be an object of name: value"]})
        name, value = str(item[0]), str(item[1])
        if not schema.HEADER_NAME.match(name) or schema.FORBIDDEN_VALUE_CHARS.search(value):
            raise ValidationError({"headers": [f"invalid header {name!r}"]})
        clean.append([name, value])
    return clean


def synthetic_request(p: Principal, route_pk: Any, data: dict, actor: str = "") -> dict:
    route = route_or_404(p, route_pk)
    require_level(p, _owner(route), "edit")
    host, path, method, headers = _host_of(route, data), _path_of(route, data), _method_of(data), _headers_of(data)
    node = pick_node(p, data.get("node"))
    session = CaptureSession.objects.create(
        route=route, tenant=_owner(route), node=node, count=1,
        synthetic=True, created_by=actor[:200], expires=timezone.now() + SYNTHETIC_SESSION)
    msg = {"type": schema.MSG_SYNTHETIC, "id": session.id.hex, "route": route.id, "host": host,
           "path": path, "method": method, "headers": headers, "timeout": SYNTHETIC_TIMEOUT}
    result = async_to_sync(run_on_node)(node, msg, 30.0)
    # the node's own answer names it by a bare string: the node object below wins
    return {**result, "node": {"id": node.id, "name": node.name}, "capture_session": session.id.hex,
            "request": {"host": host, "path": path, "method": method},
            "links": {"capture": url("capture", session.id.hex)}}
