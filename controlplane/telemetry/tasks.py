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
    from controlplane.telemetry.models import TargetEjection, TrafficMinute

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
    """Create the hourly beat schedule of ``purge_traffic`` when it is missing.
    Idempotent; an operator's changes to an existing schedule are kept."""
    if apps is not None:  # from post_migrate: are beat's tables there in this migration state?
        try:
            apps.get_model("django_celery_beat", "PeriodicTask")
            apps.get_model("django_celery_beat", "CrontabSchedule")
        except LookupError:
            return
    from django_celery_beat.models import CrontabSchedule as crontab_model
    from django_celery_beat.models import PeriodicTask as task_model

    if task_model._default_manager.using(using).filter(name=SCHEDULE_NAME).exists():
        return
    crontab, _ = crontab_model._default_manager.using(using).get_or_create(
        minute="7", hour="*", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC")
    task_model._default_manager.using(using).get_or_create(
        name=SCHEDULE_NAME,
        defaults={"task": TASK_NAME, "crontab": crontab, "enabled": True,
                  "description": "Hourly: delete traffic minutes older than "
                                 "SWITCHYARD_TRAFFIC_RETENTION_HOURS (default 48)."})


def ensure_schedules_after_migrate(sender, using="default", apps=None, **kwargs) -> None:
    if getattr(sender, "label", "") != "django_celery_beat":
        return
    ensure_schedules(using=using, apps=apps)
