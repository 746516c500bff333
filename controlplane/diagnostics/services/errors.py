"""Why 502/504: a route's or a node's errors by Proxy-Status type, each explained with
links to the next step (probe the targets, tail, capture), and whether the time goes
to the backend or to the proxy."""
from __future__ import annotations

from typing import Any

from controlplane.diagnostics.explanations import explain
from controlplane.proxy import forwardauth
from controlplane.proxy.ratelimits import diagnosis as rate_limit_diagnosis
from controlplane.proxy.models import Route
from controlplane.telemetry import queries
from controlplane.telemetry.proxystatus import rfc_type
from controlplane.tenancy.access import Principal

from .access import node_or_404, route_or_404
from .links import iso, url

MAX_MINUTES = 7 * 24 * 60
MAX_SERIES_MINUTES = 24 * 60
# RFC 9209 types that say something about the way to the targets: probe them.
UPSTREAM_TYPES = frozenset((
    "connection_refused", "connection_timeout", "dns_error", "http_response_timeout",
    "destination_ip_prohibited", "destination_ip_unroutable", "tls_protocol_error",
    "tls_certificate_error", "http_protocol_error", "connection_terminated",
    "destination_unavailable", "http_response_incomplete"))
# RFC 9209 types about the request itself: look at the requests.
REQUEST_TYPES = frozenset(("http_request_error", "http_request_denied"))


def _links(route: Route, code: str) -> dict:
    links: dict[str, Any] = {"tail": url("tail", route=route.id, proxy_status=code)}
    kind = rfc_type(code)
    if kind in UPSTREAM_TYPES:
        links["probe"] = [{"method": "POST", "url": url("probe"), "body": {"target": t.id},
                           "target": f"{t.host}:{t.port}"}
                          for t in route.pool.targets.order_by("id")[:20]]
    if kind in REQUEST_TYPES:
        links["inspect"] = {"method": "POST", "url": url("route-capture", route.id), "body": {"count": 5}}
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
                    f"takes {u50 * 1000:.1f} ms of {t50 * 1000:.1f} ms at p50 "
                    f"(p95 {u95 * 1000:.1f} ms of {t95 * 1000:.1f} ms)")
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
    timeouts = sum(e["count"] for e in summary["errors_by_type"]
                   if rfc_type(e["type"]) == "http_response_timeout")
    return {"total": total, "upstream": upstream, "difference": overhead,
            "verdict": latency_verdict(total, upstream, timeouts)}


def _series(points: list[dict]) -> list[dict]:
    return [{"minute": iso(pt["minute"]), "ts": pt["ts"], "partial": pt["partial"],
             "requests": pt["requests"], "errors": pt["errors"],
             "by_proxy_status": pt["by_proxy_status"]} for pt in points]


def explained_errors(summary: dict, route: Route | None) -> list[dict]:
    """The summary's errors by type, each with its RFC 9209 type, what it means and
    what to check (and, for a route, links to the next steps)."""
    out = []
    for e in summary["errors_by_type"]:
        item = {**e, "proxy_status_type": rfc_type(e["type"]), **explain(e["type"])}
        if route is not None:
            item["links"] = _links(route, e["type"])
            item.update(_route_policy(route, rfc_type(e["type"])))
        out.append(item)
    return out


def _route_policy(route: Route, kind: str) -> dict:
    """What the route's own policies say about a refusal of ``kind``: the access list that
    refuses (403) or the maintenance switch (503)."""
    if kind == "http_request_denied" and not route.access_list_id:
        limited = rate_limit_diagnosis(route)  # the 429s of the route's or its tenant's limit
        if limited:
            return limited
    if kind == "http_request_denied" and route.access_list_id:
        acl = route.access_list
        found = {"policy": {"access_list": acl.name, "rules": len(acl.rules or []), "default": acl.default},
                 "check": f"This route uses access list {acl.name} ({len(acl.rules or [])} rules, everyone "
                          f"else: {acl.default}); the tail's reason says \"access list {acl.name}\" for its "
                          "refusals. Compare the client addresses with its rules, and check trusted_proxies "
                          "when clients come through a load balancer."}
        if acl.users:  # basic auth: 401 without a valid password, 429 after repeated failures
            found["policy"].update(basic_auth_users=len(acl.users), satisfy=acl.satisfy)
            found["check"] += (f" It also asks for a password ({len(acl.users)} basic-auth users, satisfy "
                               f"{acl.satisfy}): the tail's reason says \"basic auth {acl.name}\" for a 401 (no or "
                               f"a wrong password) and \"basic auth {acl.name} throttled\" for a 429 (5 failures "
                               "from one address in a minute).")
        if isinstance(route.basic_auth, dict):  # the route's own users apply too
            found["policy"]["route_basic_auth_users"] = len(route.basic_auth.get("users") or [])
            found["check"] += " " + _route_basic_auth_check(route)
        return found
    if kind == "http_request_denied" and isinstance(route.basic_auth, dict):
        return {"policy": {"route_basic_auth_users": len(route.basic_auth.get("users") or [])},
                "check": _route_basic_auth_check(route)}
    if kind == "destination_unavailable" and route.maintenance:
        return {"policy": {"maintenance": True, "retry_after": route.retry_after},
                "check": "This route is in maintenance mode: every request gets 503 without reaching the "
                         "pool. Switch maintenance off on the route when the work is done."}
    if route.forward_auth:  # its refusals (http_request_denied) and its 503s (the failure's type)
        return forwardauth.diagnosis(route.forward_auth, kind)
    return {}


def _route_basic_auth_check(route: Route) -> str:
    """What to look at for the refusals of the route's own basic auth (Route.basic_auth)."""
    realm = route.basic_auth.get("realm") or route.name
    n = len(route.basic_auth.get("users") or [])
    return (f"This route asks for a password itself ({n} basic-auth users, realm {realm}): the tail's reason "
            f"says \"basic auth {realm}\" for a 401 (no or a wrong password) and \"basic auth {realm} "
            "throttled\" for a 429 (5 failures from one address in a minute). A password can only be set "
            "again on the route, never read.")


def _window(minutes: int) -> int:
    return max(1, min(int(minutes), MAX_MINUTES))


def route_errors(p: Principal, route_pk: Any, minutes: int = 60) -> dict:
    route = route_or_404(p, route_pk)
    minutes = _window(minutes)
    summary = queries.route_summary([route.id], minutes)
    series = queries.traffic_series([route.id], min(minutes, MAX_SERIES_MINUTES))
    return {"route": {"id": route.id, "name": route.name,
                      "tenant": route.tenant.slug if route.tenant_id else None,
                      "hosts": route.hosts, "pool": route.pool.name},
            "minutes": minutes, "requests": summary["requests"], "rps": summary["rps"],
            "error_rate": summary["error_rate"], "by_status": summary["by_status"],
            "errors_by_type": explained_errors(summary, route),
            "latency": _latency(summary),
            "series": _series(series),
            "links": {"tail_errors": url("tail", route=route.id, status="5xx"),
                      "tail": url("tail", route=route.id),
                      "capture": url("route-capture", route.id)}}


def node_errors(p: Principal, node_ref: Any, minutes: int = 60) -> dict:
    """The same breakdown over what one node forwarded (a tenant: its own routes only)."""
    node = node_or_404(p, node_ref)
    minutes = _window(minutes)
    summary, per_route = queries.node_breakdown(node.id, minutes, None if p.staff else p.tenant_ids)
    names = dict(Route.objects.filter(pk__in=list(per_route)).values_list("id", "name"))
    routes = [{"id": rid, "name": names.get(rid), "requests": s["requests"], "error_rate": s["error_rate"],
               "errors_by_type": {e["type"]: e["count"] for e in s["errors_by_type"]},
               "links": {"errors": url("route-errors", rid)}}
              for rid, s in sorted(per_route.items(), key=lambda kv: -kv[1]["by_status"]["5xx"])]
    return {"node": {"id": node.id, "name": node.name, "connected": node.connected},
            "minutes": minutes, "requests": summary["requests"], "error_rate": summary["error_rate"],
            "by_status": summary["by_status"], "errors_by_type": explained_errors(summary, None),
            "latency": _latency(summary), "routes": routes,
            "links": {"tail": url("tail", node=node.id, status="5xx")}}
