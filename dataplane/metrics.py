"""Per-process counters kept in plain dicts and lists, exposed to Prometheus by a
custom collector at scrape time (exposition.py, loaded only by the process serving the
admin listener), so the hot path never takes prometheus_client locks.
Labels are bounded: route names, code classes, Proxy-Status types, pool/target ids.

``Metrics.delta_report()`` turns the same counters into the per-route deltas the
sync client reports to the control plane (``schema.MSG_STATS``): it copies and diffs
plain values on the event loop, so it needs no lock either.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import Any, Callable, Iterable

from dataplane import schema

BUCKETS = schema.LATENCY_BUCKETS  # shared with the control plane's percentiles
NO_ROUTE = "-"
HealthRow = tuple[str, str, bool]  # (pool name, target address, healthy)


class Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS, value)] += 1
        self.sum += value

    def family_args(self) -> tuple[list, float]:
        buckets, acc = [], 0
        for bound, n in zip(BUCKETS, self.counts):
            acc += n
            buckets.append((repr(bound), acc))
        buckets.append(("+Inf", acc + self.counts[-1]))
        return buckets, self.sum


class RouteStats:
    """Counters of one route name; kept across applies so counters never go back."""

    __slots__ = ("name", "route_id", "requests", "duration", "upstream", "bytes_in", "bytes_out")

    def __init__(self, name: str, route_id: int | None = None):
        self.name = name
        self.route_id = route_id  # the snapshot's route id: what stats reports are keyed by
        self.requests: dict[tuple[str, str], int] = {}  # (code class, proxy_status)
        self.duration = Histogram()
        self.upstream = Histogram()
        self.bytes_in = 0
        self.bytes_out = 0

    def observe(self, status: int, proxy_status: str, duration: float,
                upstream: float | None, bytes_in: int = 0, bytes_out: int = 0) -> None:
        key = (_CLASSES[status // 100] if status < 600 else "5xx", proxy_status)
        r = self.requests
        r[key] = r.get(key, 0) + 1
        self.duration.observe(duration)
        if upstream is not None:
            self.upstream.observe(upstream)
        if bytes_in:
            self.bytes_in += bytes_in
        if bytes_out:
            self.bytes_out += bytes_out


_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")


class Metrics:
    def __init__(self) -> None:
        self.routes: dict[str, RouteStats] = {}
        self.active_connections = 0
        self.config_version: int | None = None
        self.applies = {"ok": 0, "error": 0}
        # () -> the health row of every target; the node state sets it to read its tables
        self.target_health: Callable[[], Iterable[HealthRow]] = self._reported_health
        self.reported_health: list[HealthRow] = []
        self.no_route = self.route(NO_ROUTE)
        # delta_report's baseline: stats key -> (total, requests, duration, upstream, in, out)
        self._reported: dict[Any, tuple] = {}

    def report_health(self, rows: list[HealthRow]) -> None:
        """Show ``rows`` as the targets' health: a supervisor serves no traffic itself,
        so its targets are as healthy as its workers report."""
        self.reported_health = rows
        self.target_health = self._reported_health

    def _reported_health(self) -> list[HealthRow]:
        return self.reported_health

    def route(self, name: str, route_id: int | None = None) -> RouteStats:
        """The counters of a route. With ``route_id`` they are kept per (id, name), so
        two tenants' routes of the same name are told apart in stats reports (the
        Prometheus ``route`` label, a name, adds them up)."""
        key = name if route_id is None else (route_id, name)
        s = self.routes.get(key)
        if s is None:
            s = self.routes[key] = RouteStats(name, route_id)
        return s

    def delta_report(self) -> dict[int, dict]:
        """Per route id, what changed since the previous call, in the shape of a
        ``schema.MSG_STATS`` route entry; routes without new requests are left out
        (so is traffic that matched no route: it has no route id)."""
        out: dict[int, dict] = {}
        prev = self._reported
        for key, s in list(self.routes.items()):
            rid = s.route_id
            if rid is None:
                continue
            total = sum(s.duration.counts)  # one observation per request
            last = prev.get(key)
            if last is not None and last[0] == total:
                continue
            cur = (total, dict(s.requests), list(s.duration.counts), list(s.upstream.counts),
                   s.bytes_in, s.bytes_out)
            prev[key] = cur
            if last is None:
                last = (0, {}, [0] * len(cur[2]), [0] * len(cur[3]), 0, 0)
            entry = out.get(rid)
            if entry is None:  # a renamed route has two stats objects under one id
                entry = out[rid] = {
                    "requests": 0, "by_status": {}, "by_proxy_status": {},
                    "latency_buckets": [0] * schema.STATS_BUCKET_SLOTS,
                    "upstream_latency_buckets": [0] * schema.STATS_BUCKET_SLOTS,
                    "bytes_in": 0, "bytes_out": 0}
            entry["requests"] += total - last[0]
            by_status, by_ps, old = entry["by_status"], entry["by_proxy_status"], last[1]
            for (cls, ps), n in cur[1].items():
                d = n - old.get((cls, ps), 0)
                if d <= 0:
                    continue
                by_status[cls] = by_status.get(cls, 0) + d
                if ps:
                    if not schema.PROXY_STATUS_TYPE.match(ps) or (
                            ps not in by_ps and len(by_ps) >= schema.MAX_STATS_PROXY_STATUS - 1):
                        ps = "other"
                    by_ps[ps] = by_ps.get(ps, 0) + d
            for field, now_, then in (("latency_buckets", cur[2], last[2]),
                                      ("upstream_latency_buckets", cur[3], last[3])):
                buckets = entry[field]
                for i, (a, b) in enumerate(zip(now_, then)):
                    buckets[i] += a - b
            entry["bytes_in"] += cur[4] - last[4]
            entry["bytes_out"] += cur[5] - last[5]
        return out
