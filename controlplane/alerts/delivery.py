"""Delivering one alert through one channel, once: e-mail through Django's mail
settings, and webhooks as a signed JSON POST (``X-Switchyard-Signature: sha256=<hex
HMAC-SHA256 of the exact body>``) that follows no redirect and ignores the proxy
variables of the environment. A tenant's webhook URL obeys the upstream address policy,
checked again, against the very address connected to, on every delivery."""
from __future__ import annotations

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

from django.conf import settings
from django.core.mail import get_connection, send_mail

from controlplane.alerts.models import Alert, AlertChannel
from controlplane.alerts.validation import url_problems
from controlplane.tenancy import upstream_policy

log = logging.getLogger(__name__)

USER_AGENT = "Switchyard-Alerts/1"
SIGNATURE_HEADER = "X-Switchyard-Signature"

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
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "X-Switchyard-Event": alert.kind}
    if alert.pk:  # a channel's test message is no stored alert
        headers["X-Switchyard-Alert"] = str(alert.pk)
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
    except Exception:  # noqa: BLE001 - the excerpt only decorates the error already reported
        return ""
    return " ".join(text.split())[:200]


def _vetted_address(host: str, tenant) -> str:
    """Resolve ``host`` once, apply the tenant's upstream policy to every address, and
    return the address to connect to, so DNS cannot answer differently in between."""
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
    # ProxyHandler({}): HTTP(S)_PROXY in the environment are ignored.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _RefuseRedirects(),
                                       _HTTPHandler(address), _HTTPSHandler(address, _tls_context()))
