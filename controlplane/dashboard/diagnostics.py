"""Diagnostics pages: the troubleshooting steps, one click each.

Every page calls ``controlplane.diagnostics.services`` with the dashboard principal,
so scoping is the API's: staff everything, a tenant member its own routes, targets and
names (another tenant's route is a 404); node status details are staff-only. The live
tail page streams from ``/api/v1/diagnostics/tail/?output=jsonl`` (fetch, dashboard
session auth) in the browser.
"""
from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_protect

from controlplane.diagnostics import services
from controlplane.diagnostics.explanations import EXPLANATIONS
from controlplane.proxy.models import Target
from controlplane.tenancy.access import principal as get_principal

from .errors import error_messages

TAIL_FILTERS = ("route", "host", "status", "proxy_status", "client", "node")


def _problem(exc) -> list[str]:
    """Human-readable messages of a service error (validation, node unavailable)."""
    return error_messages(exc) if isinstance(exc, ValidationError) else [str(exc)]


def _run(fn, *args, **kw):
    """(result, errors): a service call; 403 for a too-low role, 404 passes through."""
    try:
        return fn(*args, **kw), []
    except services.Forbidden as exc:
        raise PermissionDenied(str(exc)) from None
    except (ValidationError, services.Conflict) as exc:
        return None, _problem(exc)


def _nodes(p):
    return [{"id": n["id"], "name": n["name"], "connected": n["connected"]}
            for n in services.nodes_status(p)] if p.staff else services.nodes_status(p)


def _targets(p):
    qs = Target.objects.select_related("pool", "pool__tenant").order_by("pool__name", "id")
    return p.scope(qs, "pool__tenant")[:200]


def tail_url(**params) -> str:
    q = {k: v for k, v in params.items() if v not in (None, "")}
    return reverse("dashboard:diagnostics_tail") + ("?" + urlencode(q) if q else "")


@login_required
def index(request):
    p = get_principal(request)
    nodes = services.nodes_status(p)
    config = services.config_check() if p.staff and request.GET.get("check") == "1" else None
    routes = services.routes_for(p).order_by("name")
    return render(request, "dashboard/diagnostics/index.html",
                  {"nodes": nodes, "config": config, "routes": routes, "staff": p.staff})


@login_required
def tail(request):
    p = get_principal(request)
    values = {k: (request.GET.get(k) or "").strip() for k in TAIL_FILTERS}
    errors = []
    try:
        services.tail_filter(p, {k: values[k] for k in TAIL_FILTERS if k != "node"})
    except ValidationError as exc:
        errors = _problem(exc)
    query = urlencode({k: v for k, v in values.items() if v})
    return render(request, "dashboard/diagnostics/tail.html", {
        "values": values, "errors": errors, "routes": services.routes_for(p).order_by("name"),
        "nodes": _nodes(p), "stream_url": f"{reverse('api:diagnostics:tail')}?{query}" if not errors else "",
        "codes": sorted(EXPLANATIONS)})


@login_required
@csrf_protect
def probe(request):
    p = get_principal(request)
    data = request.POST if request.method == "POST" else request.GET
    values = {k: (data.get(k) or "").strip() for k in ("node", "target", "url", "path", "sni", "tenant")}
    values["insecure"] = bool(data.get("insecure"))
    result, errors = None, []
    if request.method == "POST":  # a probe makes a node send traffic: never on a GET (a link, a prefetch)
        body = {k: v for k, v in values.items() if v not in ("", False)}
        if values["target"]:
            body.pop("url", None)
        result, errors = _run(services.probe, p, body)
    steps = []
    if result:
        r = result["result"]
        for name in ("dns", "policy", "tcp", "tls", "http"):
            step = r.get(name)
            if step is not None:
                steps.append({"name": name, "ok": step.get("ok"), "time_ms": step.get("time_ms"),
                              "error": step.get("error") or step.get("verify_error"), "data": step})
    return render(request, "dashboard/diagnostics/probe.html", {
        "values": values, "result": result, "steps": steps, "errors": errors,
        "nodes": _nodes(p), "targets": _targets(p),
        "tenants": p.tenants().order_by("slug") if not p.staff else []})


@login_required
@csrf_protect
def tls(request):
    p = get_principal(request)
    data = request.POST if request.method == "POST" else request.GET
    values = {k: (data.get(k) or "").strip() for k in ("node", "sni")}
    result, errors = None, []
    if request.method == "POST":
        result, errors = _run(services.tls_check, p, {k: v for k, v in values.items() if v})
    return render(request, "dashboard/diagnostics/tls.html", {
        "values": values, "result": result, "errors": errors, "nodes": _nodes(p)})


@login_required
def why(request, pk):
    p = get_principal(request)
    try:
        minutes = max(1, min(int(request.GET.get("minutes", 60)), 7 * 24 * 60))
    except ValueError:
        minutes = 60
    data = services.route_errors(p, pk, minutes)
    for e in data["errors_by_type"]:
        e["tail_url"] = tail_url(route=pk, proxy_status=e["type"])
        e["probe_targets"] = [{"target": t["body"]["target"], "label": t["target"]}
                              for t in (e.get("links") or {}).get("probe") or []]
    return render(request, "dashboard/diagnostics/why.html", {
        "data": data, "route": data["route"], "minutes": minutes,
        "tail_errors_url": tail_url(route=pk, status="5xx"), "tail_all_url": tail_url(route=pk)})


@login_required
@csrf_protect
def inspect(request, pk):
    p = get_principal(request)
    route = services.route_or_404(p, pk)
    errors, synthetic, session = [], None, None
    values = {"count": request.POST.get("count") or "5", "seconds": request.POST.get("seconds") or "300",
              "path": request.POST.get("path") or "", "node": request.POST.get("node") or "",
              "xff": request.POST.get("xff") or ""}
    actor = str(request.user)
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "arm":
            body = {"count": values["count"], "seconds": values["seconds"]}
            if values["node"]:
                body["node"] = values["node"]
            session, errors = _run(services.arm_capture, p, pk, body, actor=actor)
        elif action == "test":
            body = {"path": values["path"] or None, "node": values["node"] or None}
            if values["xff"]:
                body["headers"] = {"X-Forwarded-For": values["xff"]}
            synthetic, errors = _run(services.synthetic_request, p, pk,
                                     {k: v for k, v in body.items() if v}, actor=actor)
        elif action == "stop":
            session, errors = _run(services.stop_capture, p, request.POST.get("session"))
    captures = services.route_captures(p, pk)
    return render(request, "dashboard/diagnostics/inspect.html", {
        "route": route, "captures": captures, "requests": [_pair(r) for r in captures["requests"]],
        "session": session, "synthetic": synthetic, "errors": errors, "values": values,
        "nodes": _nodes(p), "can_edit": p.can_edit(route.tenant_id) if route.tenant_id else p.staff})


WATCHED = ("host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip",
           "forwarded", "via", "upgrade", "connection")


def _pair(rec: dict) -> dict:
    """A captured request with its headers side by side (received vs sent upstream)."""
    received = (rec.get("client_request") or {}).get("headers") or []
    sent = (rec.get("upstream_request") or {}).get("headers") or []
    rmap, smap = {}, {}
    for n, v in received:
        rmap.setdefault(n.lower(), []).append(v)
    for n, v in sent:
        smap.setdefault(n.lower(), []).append(v)
    names = list(dict.fromkeys([n.lower() for n, _ in received] + [n.lower() for n, _ in sent]))
    rows = []
    for n in names:
        a, b = ", ".join(rmap.get(n, [])), ", ".join(smap.get(n, []))
        rows.append({"name": n, "received": a if n in rmap else None, "sent": b if n in smap else None,
                     "changed": a != b, "watched": n in WATCHED})
    return {**rec, "rows": rows,
            "response_headers": (rec.get("upstream_response") or {}).get("headers")
            or (rec.get("client_response") or {}).get("headers") or []}
