"""Traffic figures for the dashboard, from ``controlplane.telemetry.queries``
(per-minute aggregates per route, reported by the nodes).

Scoping: the queries take the routes to look at; we pass only the routes the
principal may see, so a tenant member sees their tenants' traffic only.
"""
from __future__ import annotations

import logging

from django.db.models import Min

from controlplane.proxy.models import Route
from controlplane.telemetry import queries

log = logging.getLogger("switchyard.dashboard")
WINDOW_MINUTES = 60
TOP_ROUTES = 6
COLORS = {"2xx": "#1a7f45", "p50": "#2457c5", "p95": "#b76e00", "p99": "#c22f2f"}


def _routes(principal):
    return principal.scope(Route.objects.all())


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000, 1)


def _series_charts(points, prefix: str, title_suffix: str = "") -> list[dict]:
    """requests/s, errors by Proxy-Status type, p50/p95/p99 latency from traffic_series points."""
    if not points:
        return []
    start, end = points[0]["ts"], points[-1]["ts"]
    kinds: dict[str, int] = {}
    for p in points:
        for kind, n in (p.get("by_proxy_status") or {}).items():
            kinds[kind] = kinds.get(kind, 0) + n
    top = sorted(kinds, key=lambda k: -kinds[k])[:6]
    charts = [
        _chart(f"{prefix}rps", "Requests per second" + title_suffix, f"last {len(points)} min",
               start, end, "req/s", [{"label": "requests/s", "data": [{"x": p["ts"], "y": p["rps"]} for p in points]}]),
        _chart(f"{prefix}errors", "Errors by Proxy-Status type" + title_suffix,
               "responses the proxy generated, per minute", start, end, "responses",
               [{"label": kind, "data": [{"x": p["ts"], "y": (p.get("by_proxy_status") or {}).get(kind, 0)}
                                         for p in points]} for kind in top]
               or [{"label": "no proxy errors", "data": [{"x": p["ts"], "y": 0} for p in points],
                    "color": COLORS["2xx"]}]),
        _chart(f"{prefix}latency", "Latency" + title_suffix, "p50 / p95 / p99, ms", start, end, "ms",
               [{"label": name, "color": COLORS[name],
                 "data": [{"x": p["ts"], "y": _ms(p.get(name))} for p in points if p.get(name) is not None]}
                for name in ("p50", "p95", "p99")]),
    ]
    return charts


def _chart(chart_id, title, subtitle, start, end, unit, series) -> dict:
    return {"id": chart_id, "script_id": f"chart-{chart_id}", "title": title, "subtitle": subtitle,
            "data": {"type": "series", "start": start, "end": end, "unit": unit, "series": series}}


def _figures(summary: dict) -> dict:
    requests = summary.get("requests") or 0
    by_type = summary.get("by_proxy_status") or {}
    return {
        "requests": requests,
        "rps": summary.get("rps") or 0.0,
        "error_rate_pct": round((summary.get("error_rate") or 0.0) * 100, 2),
        "proxy_errors": [{"type": k, "count": n, "pct": round(100 * n / requests, 2) if requests else 0.0}
                         for k, n in by_type.items()],
        "p50_ms": _ms(summary.get("p50")), "p95_ms": _ms(summary.get("p95")), "p99_ms": _ms(summary.get("p99")),
    }


def overview(principal):
    try:
        routes = _routes(principal)
        now = queries.overview(routes, minutes=5)
        points = queries.traffic_series(routes, minutes=WINDOW_MINUTES)
        charts = _series_charts(points, "all-")
        summaries = queries.route_summaries(routes, minutes=WINDOW_MINUTES)
        charts.append(_p95_per_route(summaries, points))
        charts = since_created([c for c in charts if c], routes.aggregate(first=Min("created"))["first"])
    except Exception:  # traffic panels must never break the overview
        log.exception("dashboard: reading traffic failed")
        return None
    return {**_figures(now), "window": now.get("minutes"), "charts": [c for c in charts if c],
            "has_traffic": any(p.get("requests") for p in points)}


def _p95_per_route(summaries: dict, points) -> dict | None:
    if not points:
        return None
    top = sorted(summaries, key=lambda rid: -(summaries[rid].get("requests") or 0))[:TOP_ROUTES]
    names = dict(Route.objects.filter(pk__in=top).values_list("pk", "name"))
    series = []
    for rid in top:
        route_points = queries.traffic_series([rid], minutes=WINDOW_MINUTES)
        series.append({"label": names.get(rid, f"route {rid}"),
                       "data": [{"x": p["ts"], "y": _ms(p["p95"])} for p in route_points if p.get("p95") is not None]})
    return _chart("p95-routes", "p95 latency per route", f"busiest {len(series)} routes, ms",
                  points[0]["ts"], points[-1]["ts"], "ms", series)


def per_route(principal):
    """{route id: {rps, error_rate_pct, p95_ms}} over the last hour, or None."""
    try:
        summaries = queries.route_summaries(_routes(principal), minutes=WINDOW_MINUTES)
    except Exception:
        log.exception("dashboard: reading route traffic failed")
        return None
    return {rid: {"rps": s.get("rps") or 0.0, "error_rate_pct": round((s.get("error_rate") or 0) * 100, 2),
                  "p95_ms": _ms((s.get("latency") or {}).get("p95"))} for rid, s in summaries.items()}


def route_charts(principal, route):
    try:
        points = queries.traffic_series([route.pk], minutes=WINDOW_MINUTES)
        summary = queries.route_summary([route.pk], minutes=WINDOW_MINUTES)
    except Exception:
        log.exception("dashboard: reading traffic of route %s failed", route.pk)
        return None
    errors = [{"type": e["type"], "count": e["count"], "status": e.get("status"),
               "pct": round(100 * (e.get("share") or 0), 2)} for e in summary.get("errors_by_type") or []]
    return {"summary": summary, "proxy_errors": errors, "window": WINDOW_MINUTES,
            "charts": since_created(_series_charts(points, f"route{route.pk}-"), route.created),
            "has_traffic": any(p.get("requests") for p in points)}


def since_created(charts: list[dict], created) -> list[dict]:
    """Drop the points of minutes that ended before the object existed (the time axis
    stays): a chart draws nothing, not zeros, for time before its route was created."""
    if created is None:
        return charts
    first = (int(created.timestamp()) // 60) * 60 * 1000  # the minute the object was created in
    for chart in charts:
        for series in chart["data"]["series"]:
            series["data"] = [p for p in series["data"] if p["x"] >= first]
    return charts


def live_counters(principal):
    """Small figures for /ws/live/: requests/s and error rate over the last 2 minutes."""
    try:
        now = queries.overview(_routes(principal), minutes=2)
    except Exception:
        log.exception("dashboard: reading live traffic failed")
        return None
    figures = _figures(now)
    return {"values": {"rps": f"{figures['rps']:.1f}", "error_rate": f"{figures['error_rate_pct']:.2f}%"},
            "requests": figures["requests"], "proxy_errors": figures["proxy_errors"]}
