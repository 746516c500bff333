"""Celery tasks of the active health checks.

``check_pool(pool_id)`` is scheduled per pool by django-celery-beat (see
``schedules.py``: a ``PeriodicTask`` named ``health-check-pool-<id>``).
``purge_transitions()`` runs daily (schedule created after migrate, like the other
retention tasks) and deletes transitions older than ``SWITCHYARD_HEALTH_HISTORY_DAYS``.
"""
from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task
from celery.signals import beat_init
from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from controlplane.beat import ensure_crontab_task
from controlplane.health import schedules
from controlplane.health.models import HealthTransition
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


HISTORY_SCHEDULE_NAME = "health-history-retention"
PURGE_TASK_NAME = "controlplane.health.tasks.purge_transitions"
PURGE_BATCH = 5000


@shared_task(name=PURGE_TASK_NAME, ignore_result=True)
def purge_transitions(now=None) -> int:
    """Delete health transitions older than SWITCHYARD_HEALTH_HISTORY_DAYS, in batches;
    returns how many rows went. Each target's newest transition is kept whatever its
    age: it is the reason shown for the target's current state."""
    days = max(1.0, float(getattr(settings, "SWITCHYARD_HEALTH_HISTORY_DAYS", 30)))
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)
    newest = HealthTransition.objects.values("target").annotate(last=Max("id")).values("last")
    old = HealthTransition.objects.filter(created__lt=cutoff).exclude(id__in=newest)
    deleted = 0
    while True:
        ids = list(old.order_by("id").values_list("id", flat=True)[:PURGE_BATCH])
        if not ids:
            break
        deleted += HealthTransition.objects.filter(id__in=ids).delete()[0]
    if deleted:
        log.info("health: deleted %s transition(s) older than %s", deleted, cutoff)
    return deleted


def ensure_history_schedule(sender, using="default", apps=None, **kwargs) -> None:
    """post_migrate: create the daily retention schedule once (idempotent)."""
    if getattr(sender, "label", "") != "django_celery_beat":
        return
    ensure_crontab_task(HISTORY_SCHEDULE_NAME, PURGE_TASK_NAME, {"minute": "23", "hour": "3"},
                        "Daily: delete health transitions older than "
                        "SWITCHYARD_HEALTH_HISTORY_DAYS (default 30).", using=using, apps=apps)
