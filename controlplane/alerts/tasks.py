"""Alert delivery: one Celery task per alert and channel, so that a failing channel
never blocks the others. Every attempt is recorded as a ``Delivery``; a failed one is
tried again later with exponential backoff (10 s, 30 s, 90 s, 270 s ... with the default
``SWITCHYARD_ALERT_RETRY_BASE_SECONDS`` of 10), at most ``SWITCHYARD_ALERT_MAX_ATTEMPTS``
attempts in all."""
from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from controlplane.alerts.delivery import DeliveryError, send
from controlplane.alerts.models import Alert, AlertChannel, Delivery

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 10
BACKOFF_FACTOR = 3


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based):
    ``SWITCHYARD_ALERT_RETRY_BASE_SECONDS`` × 3^(attempt-1)."""
    base = float(getattr(settings, "SWITCHYARD_ALERT_RETRY_BASE_SECONDS", BACKOFF_BASE_SECONDS))
    seconds = max(0.0, base) * BACKOFF_FACTOR ** (attempt - 1)
    return int(seconds) if float(seconds).is_integer() else seconds


def max_attempts() -> int:
    return max(1, int(getattr(settings, "SWITCHYARD_ALERT_MAX_ATTEMPTS", 5)))


@shared_task(name="controlplane.alerts.tasks.deliver", ignore_result=True)
def deliver(alert_id: int, channel_id: int, attempt: int = 1) -> str:
    """Deliver one alert through one channel; returns the attempt's status."""
    alert = Alert.objects.select_related("tenant").filter(pk=alert_id).first()
    channel = AlertChannel.objects.select_related("tenant").filter(pk=channel_id).first()
    if alert is None or channel is None:
        return "gone"
    if not channel.enabled:
        return "disabled"
    if channel.tenant_id is not None and channel.tenant_id != alert.tenant_id:
        log.error("alert %s (tenant %s) not delivered to channel %s of tenant %s",
                  alert.pk, alert.tenant_id, channel.pk, channel.tenant_id)
        return "refused"
    delivery = Delivery.objects.create(alert=alert, channel=channel, attempt=attempt,
                                       status=Delivery.PENDING)
    code, error = None, ""
    try:
        code = send(alert, channel)
    except DeliveryError as exc:
        code, error = exc.response_code, str(exc)
    except Exception as exc:  # noqa: BLE001 - SMTP errors, TLS errors, anything: record and retry
        error = f"{type(exc).__name__}: {exc}"
    status = Delivery.FAILED if error else Delivery.SENT
    Delivery.objects.filter(pk=delivery.pk).update(status=status, response_code=code, error=error[:2000])
    if status == Delivery.FAILED:
        if attempt < max_attempts():
            countdown = backoff(attempt)
            log.warning("alert %s to channel %s failed (attempt %s: %s); next try in %s s",
                        alert.pk, channel.name, attempt, error, countdown)
            schedule_retry(alert_id, channel_id, attempt + 1, countdown)
        else:
            log.error("alert %s to channel %s failed for good after %s attempts: %s",
                      alert.pk, channel.name, attempt, error)
    return status


def schedule_retry(alert_id: int, channel_id: int, attempt: int, countdown: int) -> None:
    deliver.apply_async((alert_id, channel_id, attempt), countdown=countdown)
