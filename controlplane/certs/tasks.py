"""Certificate expiry scan: daily from Celery beat and right after each upload.

Thresholds: 30, 14, 7, 3 and 1 days before ``not_after``, and expired. A scan raises
at most one alert per certificate: for the smallest threshold it has crossed (a
certificate uploaded 10 days before expiry alerts for 14 days, not also for 30). Each
(certificate, fingerprint, threshold) alerts once ever, so re-running the scan never
alerts again, and a renewed certificate (new fingerprint) starts afresh.

Time comes from ``clock()`` or the ``now`` argument: tests move time, never sleep.
"""
from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from controlplane.alerts.services import raise_alert
from controlplane.beat import ensure_crontab_task
from controlplane.certs.expiry import days_left as whole_days_left
from controlplane.certs.expiry import remaining_text
from controlplane.proxy.models import Certificate

log = logging.getLogger(__name__)

THRESHOLDS_DAYS = (30, 14, 7, 3, 1)
EXPIRED = "expired"
SCHEDULE_NAME = "certificate-expiry-scan"
TASK_NAME = "controlplane.certs.tasks.scan_expiry"


def clock() -> dt.datetime:
    return timezone.now()


def crossed_threshold(not_after: dt.datetime, now: dt.datetime) -> int | str | None:
    """The smallest threshold crossed at ``now``: a number of days, EXPIRED, or None."""
    remaining = not_after - now
    if remaining <= dt.timedelta(0):
        return EXPIRED
    crossed = [days for days in THRESHOLDS_DAYS if remaining <= dt.timedelta(days=days)]
    return min(crossed) if crossed else None


def dedup_key(cert, threshold) -> str:
    return f"cert:{cert.pk}:{cert.fingerprint}:{threshold}"


def _as_datetime(value) -> dt.datetime:
    if value is None:
        return clock()
    if isinstance(value, str):
        parsed = parse_datetime(value)
        if parsed is None:
            raise ValueError(f"not a datetime: {value!r}")
        value = parsed
    if timezone.is_naive(value):
        value = timezone.make_aware(value, dt.timezone.utc)
    return value


def check_certificate(cert, now: dt.datetime):
    """Raise the alert ``cert`` is due at ``now``, if any; returns the Alert or None."""
    if cert.not_after is None:
        return None
    threshold = crossed_threshold(cert.not_after, now)
    if threshold is None:
        return None
    owner = cert.tenant.slug if cert.tenant_id else "platform"
    expires = f"{cert.not_after:%Y-%m-%d %H:%M} UTC"
    sans = ", ".join(cert.sans or []) or "none"
    data = {"certificate_id": cert.pk, "certificate": cert.name, "fingerprint": cert.fingerprint,
            "not_after": cert.not_after.isoformat(), "sans": list(cert.sans or []),
            "source": cert.source, "threshold": threshold}
    if threshold == EXPIRED:
        kind = "certificate_expired"
        subject = f"Certificate {cert.name} ({owner}) expired on {expires}"
        body = (f"Certificate {cert.name} for {sans} expired on {expires}. Clients connecting to "
                "these hosts now fail the TLS handshake. Upload a renewed certificate.")
    else:
        days_left = (cert.not_after - now) / dt.timedelta(days=1)
        data["threshold_days"] = threshold
        data["days_left"] = round(days_left, 2)
        data["days_left_whole"] = whole_days_left(cert.not_after, now)  # what the certificate page shows
        kind = "certificate_expiring"
        subject = (f"Certificate {cert.name} ({owner}) expires in {remaining_text(cert.not_after, now)} "
                   f"(within {threshold} days), on {expires}")
        body = (f"Certificate {cert.name} for {sans} (issuer {cert.issuer or 'unknown'}, fingerprint "
                f"{cert.fingerprint}) expires on {expires}. "
                + ("It is renewed automatically; if it is not renewed soon, check the ACME alerts."
                   if cert.source == "acme" and cert.routes.filter(acme=True).exists()
                   else "Renew it and upload the new certificate."))
    return raise_alert(kind, tenant=cert.tenant, subject=subject, body=body,
                       dedup_key=dedup_key(cert, threshold), data=data, once=True)


@shared_task(name=TASK_NAME, ignore_result=True)
def scan_expiry(now=None, certificate_id: int | None = None) -> int:
    """Scan every certificate (or only ``certificate_id``); returns how many alerts it raised."""
    now = _as_datetime(now)
    certificates = Certificate.objects.select_related("tenant").exclude(not_after=None)
    if certificate_id is not None:
        certificates = certificates.filter(pk=certificate_id)
    raised = 0
    for cert in certificates.iterator():
        try:
            if check_certificate(cert, now) is not None:
                raised += 1
        except Exception:  # one broken row must not stop the scan of the others
            log.exception("expiry scan of certificate %s failed", cert.pk)
    if raised:
        log.info("expiry scan raised %s alert(s)", raised)
    return raised


def scan_on_commit(cert) -> None:
    """Queue the expiry scan of ``cert`` for when the current transaction commits."""
    cert_id = cert.pk

    def run():
        try:
            scan_expiry.delay(certificate_id=cert_id)
        except Exception:  # the daily scan catches up; the upload itself stands
            log.exception("could not queue the expiry scan of certificate %s", cert_id)
    transaction.on_commit(run)


def certificate_saved(sender, instance, raw=False, **kwargs) -> None:
    """post_save of proxy.Certificate: every upload, renewal and ACME issue is scanned
    right away, whichever path (service, admin, API) stored it."""
    if raw or instance.not_after is None:
        return
    scan_on_commit(instance)


def ensure_schedules(using: str = "default", apps=None) -> None:
    """Create the beat schedule of this module's task when it is missing (idempotent)."""
    ensure_crontab_task(SCHEDULE_NAME, TASK_NAME, {"minute": "15", "hour": "4"},
                        "Daily certificate expiry scan (30/14/7/3/1 days and expired).", using=using, apps=apps)


def ensure_schedules_after_migrate(sender, using="default", apps=None, **kwargs) -> None:
    if getattr(sender, "label", "") != "django_celery_beat":
        return
    ensure_schedules(using=using, apps=apps)
