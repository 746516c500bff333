"""Prometheus text exposition of a node's counters (metrics.Metrics), built by a custom
collector at scrape time. Only the process serving the admin listener imports this (and
prometheus_client): worker processes of ``--workers N`` stay without it."""
from __future__ import annotations

from typing import Any, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from dataplane.metrics import NO_ROUTE, Metrics, RouteStats

__all__ = ["CONTENT_TYPE_LATEST", "registry", "render"]


def registry(m: Metrics) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(m))
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
        # Stats kept per route id are added up per name: one series per label set.
        by_name: dict[str, list[RouteStats]] = {}
        for s in list(m.routes.values()):
            by_name.setdefault(s.name, []).append(s)
        for name, group in by_name.items():
            if len(group) > 1:
                merged = RouteStats(name)
                for s in group:
                    for k, n in list(s.requests.items()):
                        merged.requests[k] = merged.requests.get(k, 0) + n
                    for mine, theirs in ((merged.duration, s.duration), (merged.upstream, s.upstream)):
                        mine.counts = [a + b for a, b in zip(mine.counts, theirs.counts)]
                        mine.sum += theirs.sum
                s = merged
            else:
                s = group[0]
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
        from dataplane.basicauth import STATS  # this process's basic-auth counters
        checks = CounterMetricFamily(
            "switchyard_basic_auth_checks", "Basic-auth Authorization values by outcome: ok/failed "
            "(a password hash computed), cached, throttled, busy, missing", labels=("result",))
        for result, n in list(STATS.items()):
            checks.add_metric((result,), n)
        yield checks


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
