"""ACME challenges the node answers itself: HTTP-01 responses and the TLS-ALPN-01 offer.

Pure functions over bytes; the tables are built once per apply (``build_http01``) and
read by the plain-HTTP listener (``http01``) and the TLS listener (``offers_acme_tls``).
"""
from __future__ import annotations

from typing import Any, Iterable

HTTP01_PATH = b"/.well-known/acme-challenge/"
ACME_TLS_ALPN = "acme-tls/1"  # the ALPN protocol of TLS-ALPN-01 validation handshakes
_ACME_TLS_ALPN_B = ACME_TLS_ALPN.encode()

HANDSHAKE_RECORD = 22
CLIENT_HELLO = 1
EXT_ALPN = 16
MAX_HELLO = 64 * 1024  # bytes read before giving up on finding a ClientHello's end

_METHOD_NOT_ALLOWED = (b"405 Method Not Allowed",
                       b"Allow: GET, HEAD\r\nContent-Type: text/plain\r\nContent-Length: 23\r\n"
                       b"Cache-Control: no-store\r\n", b"405 Method Not Allowed\n")


class Challenges:
    """The pending challenges of one applied snapshot.

    ``http01``: token (bytes) -> (header lines, body) of its 200 response, prebuilt.
    ``tls_alpn01``: host -> the SSLContext presenting that host's challenge certificate
    with ``acme-tls/1`` as its only ALPN protocol."""

    __slots__ = ("http01", "tls_alpn01")

    def __init__(self, http01: dict[bytes, tuple[bytes, bytes]] | None = None,
                 tls_alpn01: dict[str, Any] | None = None):
        self.http01 = http01 or {}
        self.tls_alpn01 = tls_alpn01 or {}


NONE = Challenges()


def build_http01(challenges: Iterable[Any]) -> dict[bytes, tuple[bytes, bytes]]:
    """token -> (header lines, body) of the 200 answer carrying its key authorization."""
    table = {}
    for c in challenges:
        body = c.key_authorization.encode("ascii")
        table[c.token.encode("ascii")] = (
            b"Content-Type: text/plain\r\nContent-Length: %d\r\nCache-Control: no-store\r\n"
            % len(body), body)
    return table


def http01(table: dict[bytes, tuple[bytes, bytes]], method: bytes,
           path: bytes) -> tuple[bytes, bytes, bytes] | None:
    """The answer (status line, header lines, body) to ``method`` on ``path``, a path
    under HTTP01_PATH; None when no challenge has that token (the caller's 404)."""
    if method != b"GET" and method != b"HEAD":
        return _METHOD_NOT_ALLOWED
    found = table.get(path[len(HTTP01_PATH):])
    if found is None:
        return None
    lines, body = found
    return b"200 OK", lines, b"" if method == b"HEAD" else body


# ---------------------------------------------------------------- TLS-ALPN-01

def offers_acme_tls(data: bytes) -> bool | None:
    """Whether the TLS ClientHello at the start of ``data`` offers ALPN acme-tls/1;
    None while ``data`` holds only part of it. Anything that is not a ClientHello
    offers nothing."""
    try:
        body = _client_hello(data)
        if body is None:
            return None
        return _ACME_TLS_ALPN_B in _alpn_protocols(body)
    except (ValueError, IndexError):
        return False


def _client_hello(data: bytes) -> bytes | None:
    """The ClientHello message body, joined from the handshake records it spans."""
    if len(data) > MAX_HELLO:
        raise ValueError("no ClientHello in the first bytes")
    msg = b""
    pos = 0
    while pos + 5 <= len(data):
        if data[pos] != HANDSHAKE_RECORD:
            raise ValueError("not a handshake record")
        end = pos + 5 + int.from_bytes(data[pos + 3:pos + 5], "big")
        if end > len(data):
            return None
        msg += data[pos + 5:end]
        pos = end
        if len(msg) >= 4:
            if msg[0] != CLIENT_HELLO:
                raise ValueError("not a ClientHello")
            need = 4 + int.from_bytes(msg[1:4], "big")
            if len(msg) >= need:
                return msg[4:need]
    if data and data[0] != HANDSHAKE_RECORD:
        raise ValueError("not a handshake record")
    return None


def _u16(b: bytes, i: int) -> int:
    if i + 2 > len(b):
        raise ValueError("truncated")
    return (b[i] << 8) | b[i + 1]


def _alpn_protocols(body: bytes) -> list[bytes]:
    """The protocol names of a ClientHello body's ALPN extension (RFC 7301)."""
    p = 2 + 32  # legacy_version, random
    p += 1 + body[p]  # legacy_session_id
    p += 2 + _u16(body, p)  # cipher_suites
    p += 1 + body[p]  # legacy_compression_methods
    if p == len(body):
        return []
    end = p + 2 + _u16(body, p)
    if end > len(body):
        raise ValueError("truncated extensions")
    p += 2
    while p + 4 <= end:
        etype, elen = _u16(body, p), _u16(body, p + 2)
        p += 4
        if etype == EXT_ALPN:
            ext = body[p:p + elen]
            names, q, stop = [], 2, 2 + _u16(ext, 0)
            while q < stop:
                n = ext[q]
                names.append(ext[q + 1:q + 1 + n])
                q += 1 + n
            return names
        p += elen
    return []
