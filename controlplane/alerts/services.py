"""Raising alerts and delivering them to channels (SPEC 2 and 6).

``raise_alert`` stores an ``Alert`` and, once the surrounding transaction commits,
queues one Celery ``deliver`` task per channel that should receive it: every enabled
channel of the alert's tenant and every enabled platform-wide channel. A tenant's
channel never receives another tenant's alerts, nor platform alerts.

Deliveries: e-mail through Django's mail settings, and webhooks as a signed JSON
POST (``X-Switchyard-Signature: sha256=<hex HMAC-SHA256 of the exact body>``) that
follows no redirect and ignores the proxy variables of the environment. A tenant's
webhook URL obeys the upstream address policy (SPEC 7), checked when the channel is
saved and again, against the very address connected to, on every delivery.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import http.client
import json
import logging
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
import zlib

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import get_connection, send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.alerts.models import Alert, AlertChannel

log = logging.getLogger(__name__)

KINDS = tuple(kind for kind, _ in Alert.KINDS)
USER_AGENT = "Switchyard-Alerts/1"
SIGNATURE_HEADER = "X-Switchyard-Signature"


def clock() -> dt.datetime:
    """The current time; tests replace it instead of sleeping through a window."""
    return timezone.now()


# --------------------------------------------------------------------------- raising

def channels_for(tenant) -> "QuerySet[AlertChannel]":
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
    from controlplane.alerts.tasks import deliver
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

def channel_problems(channel: AlertChannel) -> dict[str, list[str]]:
    """What is wrong with a channel's settings, by field name; empty when it is valid."""
    problems: dict[str, list[str]] = {}

    def add(field, message):
        problems.setdefault(field, []).append(message)

    if not (channel.name or "").strip():
        add("name", "is required")
    if channel.kind == AlertChannel.EMAIL:
        emails = channel.emails
        if not isinstance(emails, list) or not emails:
            add("emails", "give at least one address (a list)")
        else:
            for address in emails:
                try:
                    validate_email(address)
                except (ValidationError, TypeError):
                    add("emails", f"{address!r} is not an e-mail address")
    elif channel.kind == AlertChannel.WEBHOOK:
        for message in url_problems(channel.url, channel.tenant):
            add("url", message)
    else:
        add("kind", f"must be {AlertChannel.EMAIL} or {AlertChannel.WEBHOOK}")
    return problems


def url_problems(url: str, tenant=None) -> list[str]:
    """Problems with a webhook URL: http/https only, and for a tenant's channel the
    upstream address policy (no loopback, private, link-local ... addresses unless
    the platform allows that network for the tenant)."""
    try:
        parts = urllib.parse.urlsplit(url or "")
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return [f"is not a valid URL: {exc}"]
    if parts.scheme not in ("http", "https"):
        return ["must be an http:// or https:// URL"]
    if not parts.hostname:
        return ["has no host"]
    if parts.username or parts.password:
        return ["must not carry credentials; use the channel secret to authenticate"]
    if tenant is None:
        return []
    from controlplane.tenancy import upstream_policy
    return upstream_policy.check_target(parts.hostname, tenant.allowed_networks or ())


def set_secret(channel: AlertChannel, secret: str) -> None:
    """Store a webhook secret (encrypted at rest; write-only)."""
    channel.secret = secret


def _channel_view(channel: AlertChannel) -> dict:
    """The audit view of a channel: never the secret, only whether there is one."""
    return {"id": channel.pk, "name": channel.name, "kind": channel.kind, "emails": channel.emails,
            "url": channel.url, "enabled": channel.enabled, "has_secret": bool(channel.secret_encrypted),
            "tenant": channel.tenant_id}


def save_channel(actor, channel: AlertChannel, *, secret: str | None = None, note: str = "") -> AlertChannel:
    """Validate (``channel_problems``) and store a new or changed channel, audited.
    ``secret`` None keeps the stored one; "" clears it."""
    from controlplane.audit.services import record

    problems = channel_problems(channel)
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
    from controlplane.audit.services import record

    with transaction.atomic():
        before, pk = _channel_view(channel), channel.pk
        channel.delete()
        record(actor, "delete", channel, before, None, note,
               tenant=channel.tenant if channel.tenant_id else None, object_id=pk)


# --------------------------------------------------------------------------- delivery

class DeliveryError(Exception):
    def __init__(self, message: str, response_code: int | None = None):
        super().__init__(message)
        self.response_code = response_code


def send(alert: Alert, channel: AlertChannel) -> int | None:
    """Deliver ``alert`` through ``channel`` once. Returns the HTTP status for a webhook
    (None for e-mail); raises DeliveryError (or another exception) when it failed."""
    if channel.kind == AlertChannel.EMAIL:
        send_email(alert, channel)
        return None
    if channel.kind == AlertChannel.WEBHOOK:
        return send_webhook(alert, channel)
    raise DeliveryError(f"unknown channel kind {channel.kind!r}")


def _tenant_label(alert: Alert) -> str:
    return alert.tenant.slug if alert.tenant_id else ""


def email_body(alert: Alert) -> str:
    lines = [alert.subject, ""]
    if alert.body:
        lines += [alert.body, ""]
    lines += [f"Kind: {alert.kind}",
              f"Tenant: {_tenant_label(alert) or '(platform)'}",
              f"Time: {alert.created:%Y-%m-%d %H:%M:%S} UTC"]
    if alert.data:
        lines += ["", "Details:", json.dumps(alert.data, indent=2, sort_keys=True, default=str)]
    return "\n".join(lines) + "\n"


def send_email(alert: Alert, channel: AlertChannel) -> None:
    recipients = [e for e in (channel.emails or []) if isinstance(e, str) and e.strip()]
    if not recipients:
        raise DeliveryError("the channel has no e-mail addresses")
    mail_connection = get_connection(timeout=settings.SWITCHYARD_ALERT_TIMEOUT)
    sent = send_mail(f"[Switchyard] {alert.subject}", email_body(alert), settings.DEFAULT_FROM_EMAIL,
                     recipients, connection=mail_connection)
    if not sent:
        raise DeliveryError("the mail server accepted no message")


def webhook_payload(alert: Alert) -> dict:
    text = f"[{alert.kind}] {alert.subject}"
    if alert.body:
        text += "\n" + alert.body
    return {
        "text": text,  # what Slack (and compatible chat webhooks) show
        "alert_id": alert.pk,
        "kind": alert.kind,
        "subject": alert.subject,
        "body": alert.body,
        "tenant": _tenant_label(alert) or None,
        "data": alert.data,
        "created": alert.created.isoformat(),
    }


def sign(secret: str, body: bytes) -> str:
    """The X-Switchyard-Signature header value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    """For receivers (and tests): does ``header`` sign ``body`` with ``secret``?"""
    return hmac.compare_digest(sign(secret, body), header or "")


def send_webhook(alert: Alert, channel: AlertChannel) -> int:
    problems = url_problems(channel.url, None)
    if problems:
        raise DeliveryError(f"webhook URL {problems[0]}")
    host = urllib.parse.urlsplit(channel.url).hostname
    address = _vetted_address(host, channel.tenant) if channel.tenant_id else None
    body = json.dumps(webhook_payload(alert), separators=(",", ":"), default=str).encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "X-Switchyard-Event": alert.kind, "X-Switchyard-Alert": str(alert.pk)}
    secret = channel.secret
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body)
    request = urllib.request.Request(channel.url, data=body, headers=headers, method="POST")
    try:
        with _opener(address).open(request, timeout=settings.SWITCHYARD_ALERT_TIMEOUT) as response:
            status = response.status
            response.read(65536)
    except urllib.error.HTTPError as exc:
        status = exc.code
        if 300 <= status < 400:
            raise DeliveryError(f"{host} answered {status} (redirects are not followed)", status) from None
        excerpt = _excerpt(exc)
        raise DeliveryError(f"{host} answered {status}{': ' + excerpt if excerpt else ''}", status) from None
    except urllib.error.URLError as exc:
        raise DeliveryError(f"could not reach {host}: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError(f"could not reach {host}: {type(exc).__name__}: {exc}") from None
    if not 200 <= status < 300:
        raise DeliveryError(f"{host} answered {status}", status)
    return status


def _excerpt(response) -> str:
    try:
        text = response.read(300).decode("utf-8", "replace")
    except Exception:
        return ""
    return " ".join(text.split())[:200]


def _vetted_address(host: str, tenant) -> str:
    """Resolve ``host`` once, apply the tenant's upstream policy to every address, and
    return the address to connect to, so DNS cannot answer differently in between."""
    from controlplane.tenancy import upstream_policy
    try:
        literal = upstream_policy.parse_ip_literal(host)
    except ValueError as exc:
        raise DeliveryError(str(exc)) from None
    addresses = [literal] if literal is not None else upstream_policy.resolve(host)
    if not addresses:
        raise DeliveryError(f"{host} does not resolve")
    problems = upstream_policy.check_target(host, tenant.allowed_networks or (),
                                            resolver=lambda _name: addresses)
    if problems:
        raise DeliveryError(f"refused by the upstream address policy: {problems[0]}")
    return str(addresses[0])


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are reported as the delivery's failure, never followed."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _pinned(conn_class, address: str | None):
    def factory(host, **kwargs):
        conn = conn_class(host, **kwargs)
        if address:
            def create_connection(addr, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None):
                return socket.create_connection((address, addr[1]), timeout, source_address)
            conn._create_connection = create_connection
        return conn
    return factory


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, address):
        super().__init__()
        self.address = address

    def http_open(self, req):
        return self.do_open(_pinned(http.client.HTTPConnection, self.address), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, address, context):
        super().__init__(context=context)
        self.address = address

    def https_open(self, req):
        # TLS still verifies the certificate against the URL's host name (SNI too).
        return self.do_open(_pinned(http.client.HTTPSConnection, self.address), req, context=self._context)


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    if settings.SWITCHYARD_CA_BUNDLE:
        try:
            context.load_verify_locations(cafile=settings.SWITCHYARD_CA_BUNDLE)
        except (OSError, ssl.SSLError):
            log.warning("SWITCHYARD_CA_BUNDLE %s could not be loaded", settings.SWITCHYARD_CA_BUNDLE)
    return context


def _opener(address: str | None) -> urllib.request.OpenerDirector:
    # ProxyHandler({}): HTTP(S)_PROXY in the environment are ignored (SPEC 7).
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _RefuseRedirects(),
                                       _HTTPHandler(address), _HTTPSHandler(address, _tls_context()))
