"""Celery tasks of automatic certificates: one order attempt, and the scan (beat) that
starts due orders and renewals and asks the CA's renewal information."""
from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from controlplane.beat import ensure_crontab_task

from . import issuance, ondemand, services

log = logging.getLogger(__name__)

SCHEDULE_NAME = "acme-scan"
SCAN_TASK = "controlplane.acme.tasks.scan"
RUN_TASK = "controlplane.acme.tasks.run_order"
ON_DEMAND_TASK = "controlplane.acme.tasks.on_demand"


@shared_task(name=RUN_TASK, ignore_result=True)
def run_order(order_id: int) -> str:
    return issuance.run(order_id)


@shared_task(name=ON_DEMAND_TASK, ignore_result=True)
def on_demand(names: list) -> int:
    """Decide on names a node saw TLS handshakes for (``ondemand.consider``); returns
    how many were ordered."""
    ordered = 0
    for name in list(names or [])[:256]:
        if isinstance(name, str):
            decision = ondemand.consider(name)
            if decision.outcome == ondemand.ORDERED:
                queue(decision.order_id)
                ordered += 1
    return ordered


def report_unknown_sni(names: list[str]) -> int:
    """The sync consumer's hook (``publishing.sni``): triage, then one task for the rest."""
    forward = ondemand.reported(names)
    if forward:
        queue_on_demand(forward)
    return len(forward)


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


def queue_on_demand(names: list[str]) -> None:
    try:
        on_demand.delay(names)
    except Exception:  # a node reports the name again while handshakes for it go on
        log.exception("could not queue the on-demand decision of %d name(s)", len(names))


def ensure_schedules(using: str = "default", apps=None) -> None:
    ensure_crontab_task(SCHEDULE_NAME, SCAN_TASK, {"minute": "*/10", "hour": "*"},
                        "ACME: start due orders, retries and renewals; ask renewal information.",
                        using=using, apps=apps)


def ensure_schedules_after_migrate(sender, using="default", apps=None, **kwargs) -> None:
    if getattr(sender, "label", "") != "django_celery_beat":
        return
    ensure_schedules(using=using, apps=apps)
