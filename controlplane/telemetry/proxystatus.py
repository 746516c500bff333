"""What a ``proxy_status`` value of the access log and the traffic reports stands for.

The data plane writes the RFC 9209 error type there (``http_request_error``); a reason
finer than its type goes to the access log's own ``reason`` field. Rows reported
before that may hold the reason itself (``body_too_large``): both map here, so the
traffic figures and the diagnostics name one type and one status for each value.
"""
from __future__ import annotations

from dataplane.errors import ERRORS

# RFC 9209 type -> the statuses the proxy answers with when it generates the response.
_STATUSES: dict[str, set[int]] = {
    etype: {status for status, other, _ in ERRORS.values() if other == etype} for _, etype, _ in ERRORS.values()}


def rfc_type(value: str) -> str:
    """The RFC 9209 error type of ``value`` (a type already, or a reason of one)."""
    spec = ERRORS.get(value)
    return spec[1] if spec else value


def status_of(value: str) -> int | None:
    """The status the proxy answers with for ``value``: None when that varies (the
    reasons of ``http_request_error`` answer 400, 413, 414, 421, 431 or 501) or when
    the response was aborted after the upstream's status went out
    (``http_response_incomplete``)."""
    spec = ERRORS.get(value)
    if spec:
        return spec[0]
    statuses = _STATUSES.get(value, ())
    return next(iter(statuses)) if len(statuses) == 1 else None
