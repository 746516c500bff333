"""Storing a node's traffic report (``schema.MSG_STATS``): merge it into the
per-minute rows of each route and replace the node's reported ejections and runs of
connect failures.

``store_stats`` is synchronous ORM code; the sync consumer calls
``store_stats_async`` (the same function through ``database_sync_to_async``) and
only translates. The report has already been validated by ``schema.parse_stats``;
route and target ids the database does not know are ignored here.

The merge is an upsert safe on SQLite and PostgreSQL: existing rows are read with
``select_for_update`` and updated in Python (JSON histograms cannot be incremented
in portable SQL); missing rows are inserted in a savepoint, and when a concurrent
report inserted the same (minute, route, node) first, the unique constraint makes
the insert fail and the row is merged instead.
"""
from __future__ import annotations

import datetime as dt
import logging

from channels.db import database_sync_to_async
from django.db import IntegrityError, transaction
from django.utils import timezone

from controlplane.proxy.models import Route, Target
from controlplane.telemetry.models import STATUS_FIELDS, TargetEjection, TargetFailureRun, TrafficMinute
from dataplane import schema

log = logging.getLogger("switchyard.telemetry")

MAX_PROXY_STATUS_KEYS = 64          # per stored row; more types are counted as "other"
MAX_EJECTION = dt.timedelta(days=1)  # an ``until`` further away is clamped
MERGED_FIELDS = ["requests", *STATUS_FIELDS.values(), "status_other", "by_proxy_status",
                 "latency", "upstream_latency", "bytes_in", "bytes_out"]


def clock() -> dt.datetime:
    return timezone.now()


def minute_of(when: dt.datetime) -> dt.datetime:
    return when.replace(second=0, microsecond=0)


def _add_histogram(stored, delta) -> list:
    if not isinstance(stored, list) or len(stored) != len(delta):
        stored = [0] * len(delta)
    return [int(a) + b for a, b in zip(stored, delta)]


def merge(row: TrafficMinute, t: schema.RouteTraffic) -> None:
    """Add one report's counters of a route to its row (in memory)."""
    row.requests += t.requests
    other = 0
    for cls, n in t.by_status.items():
        field = STATUS_FIELDS.get(cls)
        if field is None:
            other += n
        else:
            setattr(row, field, getattr(row, field) + n)
    row.status_other += other
    ps = dict(row.by_proxy_status) if isinstance(row.by_proxy_status, dict) else {}
    for kind, n in t.by_proxy_status.items():
        if kind not in ps and len(ps) >= MAX_PROXY_STATUS_KEYS - 1:
            kind = "other"
        ps[kind] = int(ps.get(kind, 0)) + n
    row.by_proxy_status = ps
    row.latency = _add_histogram(row.latency, t.latency_buckets)
    row.upstream_latency = _add_histogram(row.upstream_latency, t.upstream_latency_buckets)
    row.bytes_in += t.bytes_in
    row.bytes_out += t.bytes_out


def _merge_one(minute, node_id, route_id, tenant_id, t: schema.RouteTraffic) -> None:
    """Upsert a single row (the path taken after a concurrent insert)."""
    for _ in range(3):
        row = (TrafficMinute.objects.select_for_update()
               .filter(minute=minute, node_id=node_id, route_id=route_id).first())
        if row is not None:
            merge(row, t)
            row.save(update_fields=MERGED_FIELDS)
            return
        row = TrafficMinute(minute=minute, node_id=node_id, route_id=route_id, tenant_id=tenant_id)
        merge(row, t)
        try:
            with transaction.atomic():
                row.save(force_insert=True)
            return
        except IntegrityError:
            continue
    log.warning("telemetry: could not store traffic of route %s (node %s)", route_id, node_id)


def store_stats(node_id: int, report: schema.StatsReport, now: dt.datetime | None = None) -> int:
    """Merge ``report`` into the minute of ``now``; returns the number of routes stored."""
    now = now or clock()
    minute = minute_of(now)
    stored = 0
    with transaction.atomic():
        wanted = [rid for rid, t in report.routes.items() if t.requests > 0]
        known = dict(Route.objects.filter(pk__in=wanted).values_list("id", "tenant_id")) if wanted else {}
        if len(known) < len(wanted):
            log.debug("telemetry: node %s reported %d unknown route(s); ignored",
                      node_id, len(wanted) - len(known))
        if known:
            existing = {r.route_id: r for r in TrafficMinute.objects.select_for_update().filter(
                minute=minute, node_id=node_id, route_id__in=list(known))}
            changed, new = [], []
            for rid, tenant_id in known.items():
                t = report.routes[rid]
                row = existing.get(rid)
                if row is None:
                    row = TrafficMinute(minute=minute, node_id=node_id, route_id=rid, tenant_id=tenant_id)
                    new.append((row, t))
                else:
                    changed.append(row)
                merge(row, t)
            if changed:
                TrafficMinute.objects.bulk_update(changed, MERGED_FIELDS)
            if new:
                try:
                    with transaction.atomic():
                        TrafficMinute.objects.bulk_create([row for row, _ in new])
                except IntegrityError:  # another report of this node won the race
                    for row, t in new:
                        _merge_one(minute, node_id, row.route_id, row.tenant_id, t)
            stored = len(known)
        _replace_ejections(node_id, report.ejections, now, Target)
        _replace_failure_runs(node_id, report.failing, now)
    return stored


def _replace_failure_runs(node_id, runs, now) -> None:
    """The node's runs of connect failures are its current state: replace them."""
    current = {r.target_id: r for r in runs}
    known = set(Target.objects.filter(pk__in=list(current)).values_list("id", flat=True)) if current else set()
    TargetFailureRun.objects.filter(node_id=node_id).exclude(target_id__in=known).delete()
    rows = {r.target_id: r for r in TargetFailureRun.objects.select_for_update().filter(
        node_id=node_id, target_id__in=known)}
    for tid in known:
        run = current[tid]
        since = min(dt.datetime.fromtimestamp(run.since, dt.timezone.utc), now)
        row = rows.get(tid)
        if row is None:
            try:
                with transaction.atomic():
                    TargetFailureRun.objects.create(node_id=node_id, target_id=tid, code=run.code[:64],
                                                    count=run.count, since=since, reported=now)
            except IntegrityError:  # a concurrent report of the same node
                TargetFailureRun.objects.filter(node_id=node_id, target_id=tid).update(
                    code=run.code[:64], count=run.count, since=since, reported=now)
        elif (row.code, row.count, row.since) != (run.code, run.count, since):
            row.code, row.count, row.since, row.reported = run.code[:64], run.count, since, now
            row.save(update_fields=["code", "count", "since", "reported"])


def _replace_ejections(node_id, ejections, now, target_model) -> None:
    current = {}
    for e in ejections:
        until = dt.datetime.fromtimestamp(e.until, dt.timezone.utc)
        if until > now:
            current[e.target_id] = min(until, now + MAX_EJECTION)
    known = set(target_model.objects.filter(pk__in=list(current)).values_list("id", flat=True)) \
        if current else set()
    TargetEjection.objects.filter(node_id=node_id).exclude(target_id__in=known).delete()
    if not known:
        return
    rows = {r.target_id: r for r in TargetEjection.objects.select_for_update().filter(
        node_id=node_id, target_id__in=known)}
    for tid in known:
        row = rows.get(tid)
        if row is None:
            try:
                with transaction.atomic():
                    TargetEjection.objects.create(node_id=node_id, target_id=tid,
                                                  until=current[tid], reported=now)
            except IntegrityError:  # a concurrent report of the same node
                TargetEjection.objects.filter(node_id=node_id, target_id=tid).update(
                    until=current[tid], reported=now)
        elif row.until != current[tid]:
            row.until, row.reported = current[tid], now
            row.save(update_fields=["until", "reported"])


store_stats_async = database_sync_to_async(store_stats)
