"""Per-process counters kept in plain dicts and lists, exposed to Prometheus by a
custom collector at scrape time, so the hot path never takes prometheus_client locks.
Labels are bounded: route names, code classes, Proxy-Status types, pool/target ids.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
NO_ROUTE = "-"


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

    __slots__ = ("name", "requests", "duration", "upstream")

    def __init__(self, name: str):
        self.name = name
        self.requests: dict[tuple[str, str], int] = {}  # (code class, proxy_status)
        self.duration = Histogram()
        self.upstream = Histogram()

    def observe(self, status: int, proxy_status: str, duration: float,
                upstream: float | None) -> None:
        key = (_CLASSES[status // 100] if status < 600 else "5xx", proxy_status)
        r = self.requests
        r[key] = r.get(key, 0) + 1
        self.duration.observe(duration)
        if upstream is not None:
            self.upstream.observe(upstream)


_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")


class Metrics:
    def __init__(self) -> None:
        self.routes: dict[str, RouteStats] = {}
        self.active_connections = 0
        self.config_version: int | None = None
        self.applies = {"ok": 0, "error": 0}
        # () -> iterable of (pool name, target address, healthy); set by the node state
        self.target_health: Callable[[], Iterable[tuple[str, str, bool]]] = lambda: ()
        self.no_route = self.route(NO_ROUTE)

    def route(self, name: str) -> RouteStats:
        s = self.routes.get(name)
        if s is None:
            s = self.routes[name] = RouteStats(name)
        return s

    def registry(self) -> CollectorRegistry:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(_Collector(self))
        return reg


class _Collector:
    def __init__(self, m: Metrics):
        self.m = m

    def collect(self) -> Iterable[Any]:
        m = self.m
        req = CounterMetricFamily("switchyard_requests", "Requests handled by this node",
                                  labels=("route", "code_class", "proxy_status"))
        dur = HistogramMetricFamily("switchyard_request_duration_seconds",
                                    "Time from request headers to the last response byte",
                                    labels=("route",))
        up = HistogramMetricFamily("switchyard_upstream_duration_seconds",
                                   "Time from sending upstream to the response headers",
                                   labels=("route",))
        for name, s in list(m.routes.items()):
            for (cls, ps), n in list(s.requests.items()):
                req.add_metric((name, cls, ps), n)
            if s.duration.counts != [0] * len(s.duration.counts) or name != NO_ROUTE:
                dur.add_metric((name,), *s.duration.family_args())
                up.add_metric((name,), *s.upstream.family_args())
        yield req
        yield dur
        yield up
        yield GaugeMetricFamily("switchyard_active_connections", "Open client connections",
                                value=m.active_connections)
        yield GaugeMetricFamily("switchyard_config_version", "Applied config version",
                                value=m.config_version if m.config_version is not None else -1)
        applies = CounterMetricFamily("switchyard_config_applies", "Config applies by result",
                                      labels=("result",))
        for result, n in m.applies.items():
            applies.add_metric((result,), n)
        yield applies
        health = GaugeMetricFamily("switchyard_target_healthy", "1 if the target gets traffic",
                                   labels=("pool", "target"))
        for pool, target, ok in m.target_health():
            health.add_metric((pool, target), 1.0 if ok else 0.0)
        yield health


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
