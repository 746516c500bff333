"""One django-celery-beat ``PeriodicTask`` per pool with an active check.

Beat runs with ``controlplane.beat.DatabaseScheduler`` and re-reads the schedule
within a second of a ``PeriodicTask`` being saved or deleted — also one saved while
beat starts — so a pool's first check runs within two intervals of the save and
changing a pool's check changes its schedule without restarting anything.

``sync_pool_schedule`` is called from the ``Pool`` signals (``signals.py``) inside the
saving transaction, so the schedule commits or rolls back with the pool;
``sync_schedules`` reconciles everything (beat start, bulk changes that skip signals).
"""
from __future__ import annotations

import json
import logging

from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from controlplane.proxy.models import Pool

log = logging.getLogger("switchyard.health")

TASK_NAME = "controlplane.health.tasks.check_pool"
NAME_PREFIX = "health-check-pool-"


def schedule_name(pool_id: int) -> str:
    return f"{NAME_PREFIX}{pool_id}"


def interval_for(seconds: float) -> tuple[int, str]:
    """(every, period) for an ``IntervalSchedule``: whole seconds when possible,
    microseconds otherwise (``every`` is an integer)."""
    seconds = max(1.0, float(seconds))
    if seconds.is_integer():
        return int(seconds), IntervalSchedule.SECONDS
    return int(round(seconds * 1_000_000)), IntervalSchedule.MICROSECONDS


def _interval(seconds: float) -> IntervalSchedule:
    every, period = interval_for(seconds)
    # Not get_or_create: IntervalSchedule has no unique constraint, duplicates may exist.
    found = IntervalSchedule.objects.filter(every=every, period=period).order_by("pk").first()
    return found or IntervalSchedule.objects.create(every=every, period=period)


def wants_schedule(pool) -> bool:
    return bool(pool.health_check_enabled)


def sync_pool_schedule(pool) -> PeriodicTask | None:
    """Create, update or delete the pool's PeriodicTask to match its check.

    Saves only when something differs: every PeriodicTask save makes beat reload.
    """
    name = schedule_name(pool.pk)
    if not wants_schedule(pool):
        delete_pool_schedule(pool.pk)
        return None
    interval = _interval(pool.health_check_interval)
    args = json.dumps([pool.pk])
    # A queued round older than one interval is useless: let the worker drop it, so a
    # stopped worker does not come back to a pile of stale rounds.
    expire = max(1, int(float(pool.health_check_interval)))
    desired = {"task": TASK_NAME, "interval_id": interval.pk, "args": args, "kwargs": "{}",
               "enabled": True, "one_off": False, "expire_seconds": expire, "expires": None,
               "crontab_id": None, "solar_id": None, "clocked_id": None}
    task = PeriodicTask.objects.filter(name=name).first()
    if task is None:
        task = PeriodicTask(name=name, description=f"Active health check of pool {pool.pk}")
        changed = True
    else:
        changed = any(getattr(task, field) != value for field, value in desired.items())
    if changed:
        for field, value in desired.items():
            setattr(task, field, value)
        task.save()
        log.info("health: schedule %s every %ss", name, pool.health_check_interval)
    return task


def delete_pool_schedule(pool_id: int) -> bool:
    # Model.delete (not a queryset delete) so beat's change signal fires.
    deleted = False
    for task in PeriodicTask.objects.filter(name=schedule_name(pool_id)):
        task.delete()
        deleted = True
    if deleted:
        log.info("health: schedule %s removed", schedule_name(pool_id))
    return deleted


def sync_schedules() -> dict:
    """Reconcile every pool's schedule; remove schedules of pools that are gone."""
    with transaction.atomic():
        kept = set()
        for pool in Pool.objects.all():
            if sync_pool_schedule(pool) is not None:
                kept.add(schedule_name(pool.pk))
        removed = 0
        for task in PeriodicTask.objects.filter(name__startswith=NAME_PREFIX):
            if task.name not in kept:
                task.delete()
                removed += 1
    return {"scheduled": len(kept), "removed": removed}
