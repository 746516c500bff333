"""Celery tasks of the active health checks (SPEC 5).

``check_pool(pool_id)`` is scheduled per pool by django-celery-beat (see
``schedules.py``: a ``PeriodicTask`` named ``health-check-pool-<id>``).
"""
from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import beat_init

from controlplane.health import schedules
from controlplane.health.rounds import run_pool_round

log = logging.getLogger("switchyard.health")


@shared_task(name=schedules.TASK_NAME, ignore_result=True)
def check_pool(pool_id: int) -> dict:
    """One check round of one pool; skipped when the previous one still runs."""
    return run_pool_round(int(pool_id)).as_dict()


@shared_task(name="controlplane.health.tasks.sync_schedules", ignore_result=True)
def sync_schedules() -> dict:
    """Reconcile the per-pool schedules with the pools."""
    return schedules.sync_schedules()


@beat_init.connect(dispatch_uid="switchyard.health.beat_init")
def _reconcile_on_beat_start(sender=None, **kwargs):
    # Pools written without signals (bulk operations, restored databases) get their
    # schedule when beat starts.
    try:
        log.info("health: schedules reconciled at beat start: %s", schedules.sync_schedules())
    except Exception:
        log.exception("health: reconciling schedules at beat start failed")
