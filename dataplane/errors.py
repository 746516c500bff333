"""Responses the proxy generates itself, each with a Proxy-Status (RFC 9209) header.

Every template is rendered to bytes at import time; only the request id and the
connection disposition are filled in per response.
"""
from __future__ import annotations

from http import HTTPStatus

PROXY_NAME = "switchyard"

# reason -> (status, Proxy-Status error type, detail). The reason is what callers pass
# around. The RFC 9209 type is the one word of the Proxy-Status header's ``error``, the
# access log's ``proxy_status`` and the metrics' ``proxy_status`` label; a reason finer
# than its type is the header's ``details`` and the access log's ``reason``.
ERRORS: dict[str, tuple[int, str, str]] = {
    "connection_refused": (502, "connection_refused", "upstream refused the connection"),
    "dns_error": (502, "dns_error", "upstream host name did not resolve"),
    "http_protocol_error": (502, "http_protocol_error", "invalid response from upstream"),
    "connection_terminated": (502, "connection_terminated",
                              "upstream closed the connection before responding"),
    "destination_ip_prohibited": (502, "destination_ip_prohibited",
                                  "upstream address not allowed by the pool policy"),
    "destination_ip_unroutable": (502, "destination_ip_unroutable", "upstream address unreachable"),
    "connection_timeout": (504, "connection_timeout", "timed out connecting to upstream"),
    "http_response_timeout": (504, "http_response_timeout",
                              "upstream sent no response headers in time"),
    "destination_unavailable": (503, "destination_unavailable", "no healthy upstream target"),
    "destination_not_found": (404, "destination_not_found", "no route matches this request"),
    "body_too_large": (413, "http_request_error", "request body too large"),
    "headers_too_large": (431, "http_request_error", "request headers too large"),
    "uri_too_long": (414, "http_request_error", "request line too long"),
    "proxy_loop_detected": (508, "proxy_loop_detected", "request already passed through this proxy"),
    "bad_request": (400, "http_request_error", "malformed request"),
    "invalid_host": (400, "http_request_error", "missing or invalid Host header"),
    "method_not_implemented": (501, "http_request_error",
                               "request method not supported by the proxy"),
    "proxy_internal_error": (500, "proxy_internal_error", "internal proxy error"),
    "tls_protocol_error": (502, "tls_protocol_error", "TLS handshake with upstream failed"),
    "tls_certificate_error": (502, "tls_certificate_error",
                              "upstream TLS certificate did not verify"),
    "misdirected_request": (421, "http_request_error",
                            "this connection's certificate does not serve this host"),
    "websocket_denied": (403, "http_request_denied", "WebSocket is not enabled on this route"),
    # route policies (dataplane.policies renders these with the access list's name)
    "access_denied": (403, "http_request_denied", "access list"),
    "maintenance": (503, "destination_unavailable", "maintenance"),
    # forward auth (dataplane.forwardauth): the auth service could not be asked -> 503,
    # never forwarded; the RFC 9209 type says what went wrong, details "forward auth"
    **{f"forward_auth_{etype}": (503, etype, "forward auth") for etype in (
        "connection_refused", "connection_timeout", "http_response_timeout", "dns_error",
        "destination_ip_prohibited", "destination_ip_unroutable", "connection_terminated",
        "http_protocol_error", "tls_protocol_error", "tls_certificate_error")},
    # dataplane.ratelimit renders these with a Retry-After line (Template's ``extra``)
    "rate_limited": (429, "http_request_denied", "rate limit"),
    # basic auth on an access list (dataplane.basicauth renders these with the list's
    # name, the WWW-Authenticate challenge and, for 429, Retry-After)
    "basic_auth_required": (401, "http_request_denied", "basic auth"),
    "basic_auth_throttled": (429, "http_request_denied", "basic auth"),
}


class Template:
    __slots__ = ("code", "status", "type", "prefix", "body", "head_len")

    def __init__(self, code: str, status: int, etype: str, detail: str, extra: str = ""):
        """``extra``: whole header lines (each ending in CRLF, checked by the caller)
        such as a 429's ``Retry-After``."""
        self.code = code
        self.status = status
        self.type = etype
        reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        self.body = f"{status} {reason}: {detail} ({etype})\n".encode()
        self.prefix = (
            f"HTTP/1.1 {status} {reason}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(self.body)}\r\n"
            "Cache-Control: no-store\r\n"
            f"{extra}"
            f'Proxy-Status: {PROXY_NAME}; error={etype}; details="{detail}"\r\n'
            "X-Request-ID: "
        ).encode()


# reason -> what an exchange that ended with it logs and counts: (RFC 9209 type, the
# finer reason or None). Codes outside ERRORS (those of aborted responses) are types.
LOGGED: dict[str, tuple[str, str | None]] = {
    code: (etype, None if code == etype else code) for code, (_, etype, _) in ERRORS.items()}
# the auth service's own non-2xx answer relayed by forward auth: a refusal by policy
LOGGED["forward_auth_denied"] = ("http_request_denied", "forward_auth_denied")

TEMPLATES: dict[str, Template] = {code: Template(code, *spec) for code, spec in ERRORS.items()}

_CLOSE = b"\r\nConnection: close\r\n\r\n"
_KEEP_11 = b"\r\n\r\n"
_KEEP_10 = b"\r\nConnection: keep-alive\r\n\r\n"


def render(code: str, request_id: bytes, close: bool, http10: bool = False,
           head: bool = False, template: Template | None = None) -> bytes:
    """The full response bytes for error ``code`` (or of ``template``, one built at
    apply time such as an access list's 403)."""
    t = template or TEMPLATES[code]
    tail = _CLOSE if close else (_KEEP_10 if http10 else _KEEP_11)
    return t.prefix + request_id + tail + (b"" if head else t.body)


def status_of(code: str) -> int:
    return TEMPLATES[code].status
