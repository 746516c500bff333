"""ACME Renewal Information (RFC 9773): when the CA wants a certificate renewed.

``fetch`` GETs ``<renewalInfo>/<certID>`` and returns the suggested window and when to
ask again (the ``Retry-After`` header, kept between one minute and twelve hours so that
a certificate is looked at at least twice a day). A malformed answer raises ``AriError``;
the caller then renews by the certificate's lifetime and asks again later.
"""
from __future__ import annotations

import base64
import datetime as dt
import email.utils
import json
import random
from dataclasses import dataclass

import requests
from cryptography import x509

MIN_RETRY = dt.timedelta(minutes=1)
MAX_RETRY = dt.timedelta(hours=12)
DEFAULT_RETRY = dt.timedelta(hours=6)
TIMEOUT_SECONDS = 10


class AriError(Exception):
    """No usable renewal information; ask again at ``retry_at``."""

    def __init__(self, message: str, retry_at: dt.datetime):
        super().__init__(message)
        self.retry_at = retry_at


@dataclass(frozen=True)
class RenewalInfo:
    start: dt.datetime
    end: dt.datetime
    retry_at: dt.datetime
    explanation_url: str = ""

    def pick_time(self, rng: random.Random | None = None) -> dt.datetime:
        """A uniformly random moment of the window, so that clients do not all renew at once."""
        span = (self.end - self.start).total_seconds()
        return self.start + dt.timedelta(seconds=(rng or random).uniform(0, span))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def cert_id(cert_pem: str) -> str:
    """The certificate's ARI identifier: base64url(authority key id) "." base64url(serial DER)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    serial = cert.serial_number
    serial_der = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)
    return f"{_b64url(aki)}.{_b64url(serial_der)}"


def retry_at(header: str | None, now: dt.datetime) -> dt.datetime:
    """``Retry-After`` (seconds or an HTTP date) as a time, clamped to [1 min, 12 h]."""
    delay = DEFAULT_RETRY
    if header:
        header = header.strip()
        if header.isdigit():
            delay = dt.timedelta(seconds=int(header))
        else:
            try:
                delay = email.utils.parsedate_to_datetime(header) - now
            except (TypeError, ValueError):
                delay = DEFAULT_RETRY
    return now + min(max(delay, MIN_RETRY), MAX_RETRY)


def _timestamp(value, what: str) -> dt.datetime:
    if not isinstance(value, str):
        raise ValueError(f"suggestedWindow.{what} is missing")
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"suggestedWindow.{what} has no time zone")
    return parsed


def parse(status: int, retry_after: str | None, body: bytes, now: dt.datetime) -> RenewalInfo:
    """The renewal information of one response (status, ``Retry-After`` header, body);
    raises AriError when it is unusable."""
    retry = retry_at(retry_after, now)
    if status != 200:
        raise AriError(f"renewalInfo answered {status}", retry)
    try:
        data = json.loads(body)
        window = data["suggestedWindow"]
        start, end = _timestamp(window.get("start"), "start"), _timestamp(window.get("end"), "end")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AriError(f"malformed renewalInfo: {exc}", retry) from None
    if end <= start:
        raise AriError("malformed renewalInfo: the window ends before it starts", retry)
    explanation = data.get("explanationURL")
    return RenewalInfo(start, end, retry, explanation if isinstance(explanation, str) else "")


def fetch(renewal_info_url: str, cert_pem: str, *, now: dt.datetime, verify=True) -> RenewalInfo:
    """GET the renewal information of ``cert_pem``; ``verify`` as for ``requests``."""
    url = renewal_info_url.rstrip("/") + "/" + cert_id(cert_pem)
    try:
        resp = requests.get(url, timeout=TIMEOUT_SECONDS, verify=verify)
    except requests.RequestException as exc:
        raise AriError(f"renewalInfo unreachable: {exc}", now + DEFAULT_RETRY) from None
    return parse(resp.status_code, resp.headers.get("Retry-After"), resp.content, now)
