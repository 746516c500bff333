"""Raising alerts, and the channels that receive them.

``raise_alert`` stores an ``Alert`` and, once the surrounding transaction commits,
queues one Celery ``deliver`` task per channel that should receive it: every enabled
channel of the alert's tenant and every enabled platform-wide channel. A tenant's
channel never receives another tenant's alerts, nor platform alerts. Channels are
validated (``AlertChannel.problems``) and audited when saved.
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
import zlib

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from controlplane.alerts.models import Alert, AlertChannel
from controlplane.alerts.tasks import deliver
from controlplane.audit.services import record

log = logging.getLogger(__name__)

KINDS = tuple(kind for kind, _ in Alert.KINDS)


def clock() -> dt.datetime:
    """The current time; tests replace it instead of sleeping through a window."""
    return timezone.now()


# --------------------------------------------------------------------------- raising

def channels_for(tenant) -> QuerySet[AlertChannel]:
    """Enabled channels that receive alerts of ``tenant`` (a Tenant, its id, or None)."""
    tenant_id = getattr(tenant, "pk", tenant)
    channels = AlertChannel.objects.filter(enabled=True)
    if tenant_id is None:
        return channels.filter(tenant__isnull=True)
    return channels.filter(Q(tenant__isnull=True) | Q(tenant_id=tenant_id))


def raise_alert(kind: str, *, tenant=None, subject: str, body: str = "", dedup_key: str = "",
                data: dict | None = None, once: bool = False,
                debounce_seconds: float | None = None) -> Alert | None:
    """Record an alert and queue its delivery (after commit) to every channel concerned.

    ``once=True``: at most one alert of this ``kind`` and ``dedup_key`` ever (enforced
    by a unique index, so concurrent scans cannot both alert). ``debounce_seconds``:
    none if an alert of this kind and ``dedup_key`` was raised within that window.
    Returns the new Alert, or None when it was suppressed.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown alert kind {kind!r}; expected one of {', '.join(KINDS)}")
    if (once or debounce_seconds) and not dedup_key:
        raise ValueError("once and debounce_seconds need a dedup_key")
    subject = " ".join(str(subject).split())[:300]  # one line: it becomes an e-mail subject
    now = clock()
    with transaction.atomic():
        if debounce_seconds and dedup_key:
            _serialize_on(f"{kind}:{dedup_key}")
            since = now - dt.timedelta(seconds=debounce_seconds)
            if Alert.objects.filter(kind=kind, dedup_key=dedup_key, created__gt=since).exists():
                log.info("alert %s %s debounced", kind, dedup_key)
                return None
        try:
            with transaction.atomic():
                alert = Alert.objects.create(
                    tenant=tenant, kind=kind, subject=subject, body=body, dedup_key=dedup_key,
                    once_key=f"{kind}:{dedup_key}" if once else None, data=data or {})
        except IntegrityError:
            if once and Alert.objects.filter(once_key=f"{kind}:{dedup_key}").exists():
                return None
            raise
        if alert.created != now:  # auto_now_add took the wall clock; keep the one decided with
            Alert.objects.filter(pk=alert.pk).update(created=now)
            alert.created = now
        for channel_id in channels_for(tenant).values_list("pk", flat=True):
            transaction.on_commit(functools.partial(_queue_delivery, alert.pk, channel_id))
    return alert


def _queue_delivery(alert_id: int, channel_id: int) -> None:
    try:
        deliver.delay(alert_id, channel_id)
    except Exception:  # a broker hiccup must not break the request that raised the alert
        log.exception("could not queue delivery of alert %s to channel %s", alert_id, channel_id)


def _serialize_on(key: str) -> None:
    """Make concurrent debounce checks of one key wait for each other (PostgreSQL;
    SQLite already serializes write transactions)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [zlib.crc32(key.encode()) - 2 ** 31])


# --------------------------------------------------------------------------- channels

def set_secret(channel: AlertChannel, secret: str) -> None:
    """Store a webhook secret (encrypted at rest; write-only)."""
    channel.secret = secret


def _channel_view(channel: AlertChannel) -> dict:
    """The audit view of a channel: never the secret, only whether there is one."""
    return {"id": channel.pk, "name": channel.name, "kind": channel.kind, "emails": channel.emails,
            "url": channel.url, "enabled": channel.enabled, "has_secret": bool(channel.secret_encrypted),
            "tenant": channel.tenant_id}


def save_channel(actor, channel: AlertChannel, *, secret: str | None = None, note: str = "") -> AlertChannel:
    """Validate (``AlertChannel.problems``) and store a new or changed channel, audited.
    ``secret`` None keeps the stored one; "" clears it."""
    problems = channel.problems()
    if problems:
        raise ValidationError(problems)
    with transaction.atomic():
        stored = AlertChannel.objects.filter(pk=channel.pk).first() if channel.pk else None
        before = _channel_view(stored) if stored is not None else None
        if secret is not None:
            set_secret(channel, secret)
        channel.save()
        record(actor, "update" if before else "create", channel, before, _channel_view(channel), note,
               tenant=channel.tenant if channel.tenant_id else None)
    return channel


def delete_channel(actor, channel: AlertChannel, note: str = "") -> None:
    with transaction.atomic():
        before, pk = _channel_view(channel), channel.pk
        channel.delete()
        record(actor, "delete", channel, before, None, note,
               tenant=channel.tenant if channel.tenant_id else None, object_id=pk)
