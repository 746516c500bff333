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
import urllib.parse
import zlib
from dataclasses import dataclass

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


def save_channel(actor, channel: AlertChannel, *, secret: str | None = None, note: str = "",
                 send_open_alerts: bool = False) -> AlertChannel:
    """Validate (``AlertChannel.problems``) and store a new or changed channel, audited.
    ``secret`` None keeps the stored one; "" clears it. ``send_open_alerts`` (new
    channels only): once the transaction commits, deliver to this channel, and to it
    alone, the alerts raised before it that are still open (``open_alerts``)."""
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
        if send_open_alerts and before is None and channel.enabled:
            for alert in open_alerts(channel):
                transaction.on_commit(functools.partial(_queue_delivery, alert.pk, channel.pk))
    return channel


def delete_channel(actor, channel: AlertChannel, note: str = "") -> None:
    with transaction.atomic():
        before, pk = _channel_view(channel), channel.pk
        channel.delete()
        record(actor, "delete", channel, before, None, note,
               tenant=channel.tenant if channel.tenant_id else None, object_id=pk)


# --------------------------------------------------------------------------- open alerts

# How far back ``open_alerts`` looks, and at most how many it returns.
OPEN_ALERTS_DAYS = 60
OPEN_ALERTS_MAX = 50
OPEN_ALERTS_SCAN = 2000  # newest alerts looked at (a flapping target leaves many)


def _visible_to(channel: AlertChannel) -> QuerySet[Alert]:
    """Alerts ``channel`` receives: its tenant's (a tenant channel), or all (a platform one)."""
    alerts = Alert.objects.all()
    return alerts.filter(tenant_id=channel.tenant_id) if channel.tenant_id else alerts


def _still_open(alert: Alert, latest: dict) -> bool:
    """Whether what ``alert`` reports still holds now. ``latest``: the newest alert seen so
    far (alerts are walked newest first) per subject, so an older alert that a newer one
    replaced (a later threshold, target_up after target_down) is not open any more."""
    from django.apps import apps

    from controlplane.proxy.models import Certificate, Target

    data = alert.data or {}
    if alert.kind in ("certificate_expiring", "certificate_expired"):
        key = ("certificate", data.get("certificate_id"))
        if key in latest:
            return False
        latest[key] = alert
        # the same certificate (a renewal has a new fingerprint and starts afresh)
        return Certificate.objects.filter(pk=data.get("certificate_id"),
                                          fingerprint=data.get("fingerprint") or "").exists()
    if alert.kind in ("target_down", "target_up"):
        key = ("target", data.get("target_id"))
        if key in latest:
            return False
        latest[key] = alert
        return alert.kind == "target_down" and Target.objects.filter(
            pk=data.get("target_id"), healthy=False).exists()
    if alert.kind == "node_disconnected":
        key = ("node", data.get("node_id"))
        if key in latest:
            return False
        latest[key] = alert
        node_model = apps.get_model("publishing", "Node")
        return node_model.objects.filter(pk=data.get("node_id"), connected=False).exists()
    return False  # target_up, node_rejected_config, acme_failed: events, not states


def open_alerts(channel: AlertChannel) -> list[Alert]:
    """Alerts raised before ``channel`` was created that ``channel`` would have received
    and that still hold: a certificate still expiring (or expired) and not renewed since, a
    target still down, a node still disconnected. The newest alert per subject, oldest
    first, at most ``OPEN_ALERTS_MAX`` of the last ``OPEN_ALERTS_DAYS`` days. Alerts
    raised after the channel was created reach it the ordinary way and are never here."""
    since = clock() - dt.timedelta(days=OPEN_ALERTS_DAYS)
    created = channel.created or clock()
    candidates = (_visible_to(channel)
                  .filter(created__gte=since, created__lt=created,
                          kind__in=("certificate_expiring", "certificate_expired", "target_down",
                                    "target_up", "node_disconnected"))
                  .order_by("-created", "-id"))[:OPEN_ALERTS_SCAN]
    latest: dict = {}
    found = [alert for alert in candidates if _still_open(alert, latest)]
    return list(reversed(found[:OPEN_ALERTS_MAX]))


def count_open_alerts(tenant=None) -> int:
    """How many alerts a channel of ``tenant`` (None: platform-wide) created now would get."""
    return len(open_alerts(AlertChannel(tenant_id=getattr(tenant, "pk", tenant), created=clock())))


# --------------------------------------------------------------------------- test messages

@dataclass
class TestResult:
    ok: bool
    message: str
    response_code: int | None = None


def send_test(actor, channel: AlertChannel) -> TestResult:
    """Send a test message through ``channel``'s real delivery (SMTP or the signed webhook
    POST, with the same address policy) right now, once, without retries. Nothing is
    stored as an alert; the attempt is audited. Returns what happened, errors included."""
    from controlplane.alerts.delivery import DeliveryError, send

    now = clock()
    owner = channel.tenant.slug if channel.tenant_id else "platform"
    message = Alert(kind="test", tenant_id=channel.tenant_id, created=now,
                    subject=f"Test message for alert channel {channel.name}",
                    body=(f"This is a test sent from Switchyard to the {channel.get_kind_display()} channel "
                          f"{channel.name} ({owner}). Alerts reach you this way."),
                    data={"test": True, "channel": channel.name})
    if channel.tenant_id:
        message.tenant = channel.tenant
    code = None
    try:
        code = send(message, channel)
    except DeliveryError as exc:
        result = TestResult(False, str(exc), exc.response_code)
    except Exception as exc:  # noqa: BLE001 - SMTP, TLS, anything: the user reads what it was
        result = TestResult(False, f"{type(exc).__name__}: {exc}")
    else:
        if channel.kind == AlertChannel.EMAIL:
            text = f"sent to {', '.join(channel.emails)}"
        else:
            text = f"{urllib.parse.urlsplit(channel.url).hostname} answered {code}"
        result = TestResult(True, text, code)
    record(actor, "test", channel, None, {"ok": result.ok, "result": result.message[:500]},
           tenant=channel.tenant if channel.tenant_id else None)
    return result
