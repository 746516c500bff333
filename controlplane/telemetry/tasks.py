"""Retention of the traffic rows: an hourly Celery beat task deletes minutes older
than ``SWITCHYARD_TRAFFIC_RETENTION_HOURS`` (default 48) and expired ejections.
The schedule is created once, idempotently, after migrate (as certs.tasks does)."""
from __future__ import annotations

import datetime as dt
import logging
import os

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from controlplane.beat import ensure_crontab_task
from controlplane.telemetry.models import TargetEjection, TrafficMinute

log = logging.getLogger("switchyard.telemetry")

SCHEDULE_NAME = "traffic-retention"
TASK_NAME = "controlplane.telemetry.tasks.purge_traffic"
DEFAULT_RETENTION_HOURS = 48.0
BATCH = 5000


def retention_hours() -> float:
    value = getattr(settings, "SWITCHYARD_TRAFFIC_RETENTION_HOURS", None)
    if value is None:
        value = os.environ.get("SWITCHYARD_TRAFFIC_RETENTION_HOURS", DEFAULT_RETENTION_HOURS)
    try:
        hours = float(value)
    except (TypeError, ValueError):
        log.error("SWITCHYARD_TRAFFIC_RETENTION_HOURS=%r is not a number; keeping %s h",
                  value, DEFAULT_RETENTION_HOURS)
        hours = DEFAULT_RETENTION_HOURS
    return max(1.0, hours)


@shared_task(name=TASK_NAME, ignore_result=True)
def purge_traffic(now=None) -> int:
    """Delete traffic minutes older than the retention; returns how many rows went.
    Deletes in batches so a long backlog never holds one huge transaction."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(hours=retention_hours())
    deleted = 0
    while True:
        ids = list(TrafficMinute.objects.filter(minute__lt=cutoff)
                   .order_by("minute").values_list("id", flat=True)[:BATCH])
        if not ids:
            break
        deleted += TrafficMinute.objects.filter(id__in=ids).delete()[0]
    TargetEjection.objects.filter(until__lt=now).delete()
    if deleted:
        log.info("telemetry: deleted %s traffic row(s) older than %s", deleted, cutoff)
    return deleted


def ensure_schedules(using: str = "default", apps=None) -> None:
    """Create the beat schedule of this module's task when it is missing (idempotent)."""
    ensure_crontab_task(SCHEDULE_NAME, TASK_NAME, {"minute": "7", "hour": "*"},
                        "Hourly: delete traffic minutes older than SWITCHYARD_TRAFFIC_RETENTION_HOURS (default 48).",
                        using=using, apps=apps)


def ensure_schedules_after_migrate(sender, using="default", apps=None, **kwargs) -> None:
    if getattr(sender, "label", "") != "django_celery_beat":
        return
    ensure_schedules(using=using, apps=apps)
