"""Traffic figures for the dashboard and the API: pure reads over ``TrafficMinute``.

Every function takes the routes to look at (a ``Route`` queryset, a queryset of ids,
or an iterable of ids or ``Route`` objects): tenant scoping is the caller's job, done
by passing only the routes the principal may see.

Units: latencies are in **seconds** (floats, None without observations), rates per
second, ``error_rate`` is the share of responses with a 5xx status (0.0 without
traffic). Percentiles come from the merged histogram buckets (``schema.LATENCY_BUCKETS``),
interpolated linearly inside the bucket, like Prometheus' ``histogram_quantile``.

Rows are filed under the minute the control plane received the report, and nodes
report every ``schema.STATS_SECONDS``: the current minute is partial (``partial``
is True on its point, and its rate is over the seconds elapsed so far).
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

from django.db.models import QuerySet
from django.utils import timezone

from controlplane.proxy.models import Route, Target
from controlplane.telemetry.models import STATUS_FIELDS, TargetEjection, TrafficMinute
from controlplane.telemetry.proxystatus import status_of
from dataplane import schema

BOUNDS = schema.LATENCY_BUCKETS
SLOTS = schema.STATS_BUCKET_SLOTS
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
_VALUES = ("minute", "route_id", "requests", *STATUS_FIELDS.values(), "status_other",
           "by_proxy_status", "latency", "upstream_latency", "bytes_in", "bytes_out")


def clock() -> dt.datetime:
    return timezone.now()


# ---------------------------------------------------------------- histograms

def percentile(buckets: list[int] | tuple[int, ...], q: float,
               bounds: tuple[float, ...] = BOUNDS) -> float | None:
    """The ``q`` quantile (0..1) of a per-bucket count histogram over ``bounds``.

    Linear interpolation inside the bucket holding the rank (the first bucket starts
    at 0); a rank in the overflow slot gives the last bound, as nothing better is known.
    """
    total = sum(buckets)
    if total <= 0:
        return None
    rank = q * total
    acc = 0
    for i, n in enumerate(buckets):
        if n > 0 and acc + n >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            lo = bounds[i - 1] if i > 0 else 0.0
            hi = bounds[i]
            return lo + (hi - lo) * max(0.0, rank - acc) / n
        acc += n
    return float(bounds[-1])


def percentiles(buckets, prefix: str = "") -> dict[str, float | None]:
    return {prefix + name: _round(percentile(buckets, q)) for name, q in QUANTILES}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def merge_histograms(into: list[int], other: Any) -> list[int]:
    if isinstance(other, list) and len(other) == len(into):
        for i, n in enumerate(other):
            if isinstance(n, int):
                into[i] += n
    return into


# ---------------------------------------------------------------- accumulation

class _Acc:
    __slots__ = ("requests", "by_status", "by_proxy_status", "latency", "upstream",
                 "bytes_in", "bytes_out")

    def __init__(self):
        self.requests = 0
        self.by_status = {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0, "other": 0}
        self.by_proxy_status: dict[str, int] = {}
        self.latency = [0] * SLOTS
        self.upstream = [0] * SLOTS
        self.bytes_in = 0
        self.bytes_out = 0

    def add(self, row: dict) -> None:
        self.requests += row["requests"]
        for cls, field in STATUS_FIELDS.items():
            self.by_status[cls] += row[field]
        self.by_status["other"] += row["status_other"]
        ps = row["by_proxy_status"]
        if isinstance(ps, dict):
            for kind, n in ps.items():
                if isinstance(n, int):
                    self.by_proxy_status[kind] = self.by_proxy_status.get(kind, 0) + n
        merge_histograms(self.latency, row["latency"])
        merge_histograms(self.upstream, row["upstream_latency"])
        self.bytes_in += row["bytes_in"]
        self.bytes_out += row["bytes_out"]

    @property
    def error_rate(self) -> float:
        return round(self.by_status["5xx"] / self.requests, 6) if self.requests else 0.0

    def figures(self, seconds: float) -> dict:
        return {
            "requests": self.requests,
            "rps": round(self.requests / seconds, 3) if seconds > 0 else 0.0,
            "error_rate": self.error_rate,
            "errors": self.by_status["5xx"],
            "by_status": dict(self.by_status),
            "by_proxy_status": dict(sorted(self.by_proxy_status.items(), key=lambda kv: -kv[1])),
            **percentiles(self.latency),
            **percentiles(self.upstream, "upstream_"),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }


def _route_filter(routes) -> dict:
    if isinstance(routes, QuerySet):
        if routes.model is Route:
            return {"route_id__in": routes.values("pk")}
        return {"route_id__in": routes}
    ids = []
    for r in routes:
        pk = getattr(r, "pk", r)
        if pk is not None:
            ids.append(int(pk))
    return {"route_id__in": ids}


def _window(minutes: int, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """(first minute of the window, current minute): ``minutes`` minutes in all."""
    minutes = max(1, int(minutes))
    current = now.replace(second=0, microsecond=0)
    return current - dt.timedelta(minutes=minutes - 1), current


def _rows(routes, start: dt.datetime) -> Iterable[dict]:
    return (TrafficMinute.objects.filter(minute__gte=start, **_route_filter(routes))
            .values(*_VALUES).iterator(chunk_size=2000))


def _current_seconds(now: dt.datetime, current: dt.datetime) -> float:
    """Seconds the current minute's figures cover: at least one report interval."""
    return min(60.0, max((now - current).total_seconds(), schema.STATS_SECONDS))


def _window_seconds(now: dt.datetime, start: dt.datetime, current: dt.datetime) -> float:
    return (current - start).total_seconds() + _current_seconds(now, current)


# ---------------------------------------------------------------- the figures

def traffic_series(routes, minutes: int = 60, now: dt.datetime | None = None) -> list[dict]:
    """One point per minute, oldest first, ``minutes`` points (minutes without traffic
    are zeros): ``minute`` (aware UTC datetime), ``ts`` (epoch ms), ``partial``,
    ``requests``, ``rps``, ``error_rate``, ``errors``, ``by_status``,
    ``by_proxy_status``, ``p50``/``p95``/``p99``, ``upstream_p50``/``_p95``/``_p99``,
    ``bytes_in``, ``bytes_out``."""
    now = now or clock()
    start, current = _window(minutes, now)
    accs: dict[dt.datetime, _Acc] = {}
    for row in _rows(routes, start):
        acc = accs.get(row["minute"])
        if acc is None:
            acc = accs[row["minute"]] = _Acc()
        acc.add(row)
    points = []
    minute = start
    while minute <= current:
        acc = accs.get(minute) or _Acc()
        partial = minute == current
        seconds = _current_seconds(now, current) if partial else 60.0
        points.append({"minute": minute, "ts": int(minute.timestamp() * 1000), "partial": partial,
                       **acc.figures(seconds)})
        minute += dt.timedelta(minutes=1)
    return points


def route_summaries(routes, minutes: int = 60, now: dt.datetime | None = None) -> dict[int, dict]:
    """``route_summary`` figures of each route with traffic in the window, by route id."""
    now = now or clock()
    start, current = _window(minutes, now)
    accs: dict[int, _Acc] = {}
    for row in _rows(routes, start):
        acc = accs.get(row["route_id"])
        if acc is None:
            acc = accs[row["route_id"]] = _Acc()
        acc.add(row)
    seconds = _window_seconds(now, start, current)
    return {rid: _summary(acc, seconds, minutes) for rid, acc in accs.items()}


def route_summary(routes, minutes: int = 60, now: dt.datetime | None = None) -> dict:
    """Totals over the window for the given routes together: ``requests``, ``rps``,
    ``error_rate``, ``by_status``, ``errors_by_type`` (one entry per Proxy-Status
    type: ``type``, ``count``, ``share`` of all requests, ``status`` the proxy answers
    with, most frequent first), ``latency`` and ``upstream_latency`` (p50/p95/p99:
    total time vs time waiting for the upstream's response headers)."""
    now = now or clock()
    start, current = _window(minutes, now)
    acc = _Acc()
    for row in _rows(routes, start):
        acc.add(row)
    return _summary(acc, _window_seconds(now, start, current), minutes)


def node_breakdown(node_id: int, minutes: int = 60, tenant_ids=None,
                   now: dt.datetime | None = None) -> tuple[dict, dict[int, dict]]:
    """What one node forwarded in the window: the ``route_summary`` figures of all of it,
    and those of each route with traffic, by route id. ``tenant_ids`` (None: all)
    limits both to those tenants' routes."""
    now = now or clock()
    start, current = _window(minutes, now)
    rows = TrafficMinute.objects.filter(node_id=node_id, minute__gte=start)
    if tenant_ids is not None:
        rows = rows.filter(tenant_id__in=list(tenant_ids))
    total, per_route = _Acc(), {}
    for row in rows.values(*_VALUES).iterator(chunk_size=2000):
        total.add(row)
        acc = per_route.get(row["route_id"])
        if acc is None:
            acc = per_route[row["route_id"]] = _Acc()
        acc.add(row)
    seconds = _window_seconds(now, start, current)
    return (_summary(total, seconds, minutes),
            {route_id: _summary(acc, seconds, minutes) for route_id, acc in per_route.items()})


def _summary(acc: _Acc, seconds: float, minutes: int) -> dict:
    figures = acc.figures(seconds)
    return {
        "minutes": minutes,
        "requests": figures["requests"],
        "rps": figures["rps"],
        "error_rate": figures["error_rate"],
        "by_status": figures["by_status"],
        "errors_by_type": [
            {"type": kind, "count": n, "status": status_of(kind),
             "share": round(n / acc.requests, 6) if acc.requests else 0.0}
            for kind, n in figures["by_proxy_status"].items()],
        "latency": {name: figures[name] for name, _ in QUANTILES},
        "upstream_latency": {name: figures["upstream_" + name] for name, _ in QUANTILES},
        "bytes_in": figures["bytes_in"],
        "bytes_out": figures["bytes_out"],
    }


def overview(routes, minutes: int = 5, now: dt.datetime | None = None) -> dict:
    """The last few minutes at a glance: ``requests``, ``rps``, ``error_rate``,
    ``by_proxy_status``, ``p50``/``p95``/``p99`` and the upstream ones."""
    now = now or clock()
    start, current = _window(minutes, now)
    acc = _Acc()
    for row in _rows(routes, start):
        acc.add(row)
    figures = acc.figures(_window_seconds(now, start, current))
    figures["minutes"] = minutes
    return figures


def ejections(target_ids=None, now: dt.datetime | None = None) -> list[dict]:
    """Targets ejected now by some node's passive health: ``node``, ``node_id``,
    ``target_id``, ``until``; pass ``target_ids`` (ids or a queryset of targets /
    ids) to scope them to a tenant."""
    now = now or clock()
    qs = TargetEjection.objects.filter(until__gt=now).select_related("node")
    if target_ids is not None:
        if isinstance(target_ids, QuerySet):
            qs = qs.filter(target_id__in=target_ids.values("pk") if target_ids.model is Target
                           else target_ids)
        else:
            qs = qs.filter(target_id__in=[int(getattr(t, "pk", t)) for t in target_ids])
    return [{"node": e.node.name, "node_id": e.node_id, "target_id": e.target_id, "until": e.until}
            for e in qs.order_by("until")]
