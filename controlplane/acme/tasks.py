"""Celery tasks of automatic certificates: one order attempt, and the scan (beat) that
starts due orders and renewals and asks the CA's renewal information."""
from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from controlplane.beat import ensure_crontab_task

from . import issuance, services

log = logging.getLogger(__name__)

SCHEDULE_NAME = "acme-scan"
SCAN_TASK = "controlplane.acme.tasks.scan"
RUN_TASK = "controlplane.acme.tasks.run_order"


@shared_task(name=RUN_TASK, ignore_result=True)
def run_order(order_id: int) -> str:
    return issuance.run(order_id)


@shared_task(name=SCAN_TASK, ignore_result=True)
def scan() -> int:
    """Queue every due order (new, retry after backoff, renewal); returns how many."""
    if not services.enabled():
        return 0
    now = timezone.now()
    try:
        issuance.refresh_renewal_info(now)
    except Exception:  # renewal information is advice: the lifetime rule still renews
        log.exception("asking the ACME renewal information failed")
    due = services.due_orders(now)
    for order_id in due:
        run_order.delay(order_id)
    return len(due)


def queue(order_id: int) -> None:
    try:
        run_order.delay(order_id)
    except Exception:  # the scan picks the order up
        log.exception("could not queue ACME order %s", order_id)


def ensure_schedules(using: str = "default", apps=None) -> None:
    ensure_crontab_task(SCHEDULE_NAME, SCAN_TASK, {"minute": "*/10", "hour": "*"},
                        "ACME: start due orders, retries and renewals; ask renewal information.",
                        using=using, apps=apps)


def ensure_schedules_after_migrate(sender, using="default", apps=None, **kwargs) -> None:
    if getattr(sender, "label", "") != "django_celery_beat":
        return
    ensure_schedules(using=using, apps=apps)
