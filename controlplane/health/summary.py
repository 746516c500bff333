"""What is known about each target's health, said the way a person reads it.

``Target.healthy`` is what the nodes route by: true until an active check decides
otherwise. That is not the same as *known to be healthy*: a target no active check
has looked at yet, in a pool without a check, is ``unknown``. The one rule, used by
the dashboard pages, the overview, the live counters and the API:

- ``unhealthy`` — the active check marked it down (``Target.healthy`` false), or no
  active check result decides it and a node reports passive evidence against it: an
  ejection in force, or a run of at least ``outlier.RUN_REPORT`` connect failures;
- ``healthy`` — the pool's active check has a result for it and it is up;
- ``unknown`` — everything else (never checked, check switched off, target disabled).

Passive evidence is shown beside the state whatever the state is ("passive: 31
connection_refused from node edge-1 since 14:02"): a target the control plane reaches
may still be refused to a node.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Exists, OuterRef
from django.utils import timezone

from controlplane.health.models import TargetHealth
from controlplane.proxy.models import Target
from controlplane.telemetry.models import TargetEjection, TargetFailureRun

HEALTHY, UNHEALTHY, UNKNOWN = "healthy", "unhealthy", "unknown"
STATES = (HEALTHY, UNHEALTHY, UNKNOWN)
# A run of connect failures a node last reported longer ago than this is not shown:
# without traffic the node has nothing new to say, and the evidence has gone stale.
PASSIVE_WINDOW = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Evidence:
    """One piece of passive evidence from one node."""
    kind: str                 # "failing" (a run of connect failures) or "ejected"
    node: str
    node_id: int
    code: str = ""            # failing: the Proxy-Status type of the failures
    count: int = 0            # failing: how many in a row
    since: dt.datetime | None = None     # failing: the first failure of the run
    until: dt.datetime | None = None     # ejected: when the ejection ends
    reported: dt.datetime | None = None

    def as_dict(self) -> dict:
        return {"kind": self.kind, "node": self.node, "code": self.code, "count": self.count,
                "since": self.since, "until": self.until, "reported": self.reported}


def passive_evidence(target_ids, now: dt.datetime | None = None) -> dict[int, list[Evidence]]:
    """``{target id: [Evidence]}`` for the targets with passive evidence now.
    ``target_ids``: ids, or a queryset of targets (scoping to a tenant), or None for all."""
    now = now or timezone.now()
    runs = TargetFailureRun.objects.filter(reported__gte=now - PASSIVE_WINDOW).select_related("node")
    ejections = TargetEjection.objects.filter(until__gt=now).select_related("node")
    if target_ids is not None:
        ids = target_ids.values("pk") if hasattr(target_ids, "values") else [int(getattr(t, "pk", t))
                                                                              for t in target_ids]
        runs, ejections = runs.filter(target_id__in=ids), ejections.filter(target_id__in=ids)
    out: dict[int, list[Evidence]] = {}
    for r in runs.order_by("since", "id"):
        out.setdefault(r.target_id, []).append(Evidence(
            "failing", r.node.name, r.node_id, code=r.code, count=r.count, since=r.since, reported=r.reported))
    for e in ejections.order_by("until", "id"):
        out.setdefault(e.target_id, []).append(Evidence(
            "ejected", e.node.name, e.node_id, until=e.until, reported=e.reported))
    return out


def state_of(*, healthy: bool, target_state: str, check_enabled: bool, checked: bool,
             passive: bool) -> str:
    """The one rule (see the module docstring)."""
    if target_state == Target.DISABLED:
        return UNKNOWN
    if not healthy:
        return UNHEALTHY
    if check_enabled and checked:
        return HEALTHY
    return UNHEALTHY if passive else UNKNOWN


def _checked(check: TargetHealth | None, target: Target) -> bool:
    return bool(check is not None and check.last_checked is not None
                and check.checked_host == target.host and check.checked_port == target.port)


def annotate(targets, pool=None, now: dt.datetime | None = None) -> list:
    """Give each target (with ``pool`` loaded, or of ``pool``) ``check`` (its
    ``TargetHealth`` or None), ``passive`` (its evidence), ``ejections`` (the ejected
    part of it) and ``health_state``. Returns the list."""
    targets = list(targets)
    ids = [t.pk for t in targets]
    checks = {h.target_id: h for h in TargetHealth.objects.filter(target_id__in=ids)}
    evidence = passive_evidence(ids, now)
    for t in targets:
        p = pool or t.pool
        t.check = checks.get(t.pk)
        t.passive = [e for e in evidence.get(t.pk, []) if e.kind == "failing"]
        t.ejections = [e for e in evidence.get(t.pk, []) if e.kind == "ejected"]
        t.health_state = state_of(healthy=t.healthy, target_state=t.state,
                                  check_enabled=p.health_check_enabled,
                                  checked=_checked(t.check, t), passive=bool(evidence.get(t.pk)))
    return targets


def _checked_qs():
    return Exists(TargetHealth.objects.filter(target=OuterRef("pk"), last_checked__isnull=False,
                                              checked_host=OuterRef("host"), checked_port=OuterRef("port")))


def counts(targets, now: dt.datetime | None = None) -> dict:
    """``{"healthy", "unhealthy", "unknown", "passive", "total"}`` over a queryset of
    targets; ``passive`` counts the targets with passive evidence (in any state)."""
    evidence = passive_evidence(targets, now)
    out = {state: 0 for state in STATES}
    out["passive"] = out["total"] = 0
    rows = targets.annotate(checked=_checked_qs()).values_list(
        "pk", "healthy", "state", "pool__health_check_enabled", "checked")
    for pk, healthy, state, enabled, checked in rows:
        out[state_of(healthy=healthy, target_state=state, check_enabled=enabled, checked=checked,
                     passive=pk in evidence)] += 1
        out["passive"] += pk in evidence
        out["total"] += 1
    return out


def needing_attention(targets, limit: int = 20, now: dt.datetime | None = None) -> list:
    """Targets that are unhealthy or have passive evidence, most recent first, annotated."""
    evidence = passive_evidence(targets, now)
    picked = targets.filter(healthy=False).exclude(state=Target.DISABLED) | targets.filter(pk__in=list(evidence))
    rows = annotate(picked.select_related("pool", "pool__tenant").order_by("-health_changed", "pk")[:limit],
                    now=now)
    return rows


def pool_counts(pool_ids) -> dict[int, dict]:
    """``{pool id: counts}`` for a page of pools (the pools list)."""
    pool_ids = list(pool_ids)
    out = {pid: {state: 0 for state in STATES} | {"passive": 0, "total": 0} for pid in pool_ids}
    targets = Target.objects.filter(pool_id__in=pool_ids)
    evidence = passive_evidence(targets)
    for pk, pool_id, healthy, state, enabled, checked in targets.annotate(checked=_checked_qs()).values_list(
            "pk", "pool_id", "healthy", "state", "pool__health_check_enabled", "checked"):
        c = out[pool_id]
        c[state_of(healthy=healthy, target_state=state, check_enabled=enabled, checked=checked,
                   passive=pk in evidence)] += 1
        c["passive"] += pk in evidence
        c["total"] += 1
    return out
