"""Header rewriting between client and upstream: pure functions over bytes.

Request side: a parsed request's fields become the upstream head after the request line
and Host: hop-by-hop fields and the ones the client's Connection header names are
dropped, the route's rules applied, the client-identity fields (X-Forwarded-*,
X-Real-IP, Forwarded) replaced or, for a trusted peer, extended, then Via, X-Request-ID
and the body framing. Response side: one classification loop (``scan_response``) serves
ordinary responses and 101 upgrades alike; the proxy then re-frames the body and adds
its own Via, X-Request-ID and Connection.

Fields are ``(lower name, name, value)`` for requests (the parser lowers each name
once) and ``(name, value)`` for responses.
"""
from __future__ import annotations

VIA = b"1.1 switchyard"
VIA_NAME = b"switchyard"

# request fields that never pass as they are, by what the proxy does with them
H_HOP, H_HOST, H_CL, H_TE, H_CONN, H_IDENT, H_VIA, H_RID, H_EXPECT, H_UPG = range(10)
REQ_CLASS = {
    b"connection": H_CONN, b"keep-alive": H_HOP, b"proxy-connection": H_HOP, b"te": H_HOP,
    b"trailer": H_HOP, b"upgrade": H_UPG, b"proxy-authorization": H_HOP,
    b"proxy-authenticate": H_HOP, b"transfer-encoding": H_TE, b"host": H_HOST,
    b"content-length": H_CL, b"x-forwarded-for": H_IDENT, b"x-forwarded-proto": H_IDENT,
    b"x-forwarded-host": H_IDENT, b"x-forwarded-port": H_IDENT, b"x-real-ip": H_IDENT,
    b"forwarded": H_IDENT, b"via": H_VIA, b"x-request-id": H_RID, b"expect": H_EXPECT,
}
# response fields: R_PASS goes out as it is, R_HOP is dropped, the rest is re-written
R_PASS, R_HOP, R_CL, R_TE, R_CONN, R_VIA, R_UPG = range(7)
RESP_CLASS = {
    b"connection": R_CONN, b"keep-alive": R_HOP, b"proxy-connection": R_HOP, b"te": R_HOP,
    b"trailer": R_HOP, b"upgrade": R_UPG, b"proxy-authorization": R_HOP,
    b"proxy-authenticate": R_HOP, b"transfer-encoding": R_TE, b"content-length": R_CL,
    b"via": R_VIA, b"x-request-id": R_HOP,
}
CHUNKED = b"Transfer-Encoding: chunked\r\n"


def tokens(value: bytes) -> list[bytes]:
    """The lower-cased members of a comma-separated field value, empty ones left out."""
    return [t.strip().lower() for t in value.split(b",") if t.strip()]


def via_loops(via: bytes) -> bool:
    """Whether a request's Via already names this proxy as a recipient (a loop)."""
    # Via: 1.1 switchyard, HTTP/1.1 other (comment) -> received-by is the second word
    for entry in via.split(b","):
        parts = entry.split()
        if len(parts) >= 2 and parts[1].lower() == VIA_NAME:
            return True
    return False


# ---- request head
def untrusted_identity(ip_b: bytes, scheme: bytes, port_b: bytes) -> bytes:
    """The identity fields of a peer whose own values are not believed: fixed for a
    connection, so built once per connection (X-Forwarded-Host varies per request)."""
    return (b"X-Forwarded-For: " + ip_b + b"\r\nX-Real-IP: " + ip_b + b"\r\nX-Forwarded-Proto: "
            + scheme + b"\r\nX-Forwarded-Port: " + port_b + b"\r\n")


def trusted_identity(received: dict, conn_tokens: list | None, ip_b: bytes, scheme: bytes,
                     port_b: bytes, host: bytes) -> tuple[tuple, bytes | None]:
    """A trusted peer's identity fields (``received``: lower name -> value), as pieces
    for ``request_head``: this hop added to X-Forwarded-For, the others kept when sent;
    and the Forwarded value it sent (None if none). Fields its Connection header names
    are hop-by-hop: not kept."""
    if conn_tokens:
        received = {k: v for k, v in received.items() if k not in conn_tokens}
    xff = received.get(b"x-forwarded-for")
    lines = (b"X-Forwarded-For: " + (xff + b", " + ip_b if xff else ip_b)
             + b"\r\nX-Real-IP: " + received.get(b"x-real-ip", ip_b)
             + b"\r\nX-Forwarded-Proto: " + received.get(b"x-forwarded-proto", scheme)
             + b"\r\nX-Forwarded-Port: " + received.get(b"x-forwarded-port", port_b)
             + b"\r\nX-Forwarded-Host: " + received.get(b"x-forwarded-host", host) + b"\r\n")
    return (lines,), received.get(b"forwarded")


def forwarded_line(ip: str, scheme: bytes, host: bytes, previous: bytes | None) -> bytes:
    """RFC 7239 Forwarded with this hop's element after ``previous`` (a trusted peer's)."""
    node = f'"[{ip}]"' if ":" in ip else ip
    mine = f"for={node};proto={scheme.decode()}".encode()
    if host:
        mine += b';host="' + host.replace(b'"', b"") + b'"'
    return b"Forwarded: " + (previous + b", " + mine if previous else mine) + b"\r\n"


def request_head(fields: list, drop: frozenset, conn_tokens: list | None, extra: bytes,
                 identity: tuple, forwarded: bytes, via: bytes | None, rid: bytes,
                 chunked: bool, clen: bytes | None) -> bytes:
    """The upstream request head after the request line and Host. ``fields`` pass but
    for the classified ones, the route's ``drop`` and the names in ``conn_tokens``; then
    the route's ``extra`` lines, the identity lines (pieces to join) and Forwarded line
    built by the caller, Via, X-Request-ID and the body framing."""
    if conn_tokens:
        drop = drop.union(conn_tokens)
    lines = []
    for lname, name, value in fields:
        if lname not in REQ_CLASS and lname not in drop:
            lines += (name, b": ", value, b"\r\n")
    lines += (extra, *identity, forwarded, b"Via: ", via + b", " + VIA if via else VIA,
              b"\r\nX-Request-ID: ", rid, b"\r\n")
    if chunked:
        lines.append(CHUNKED + b"\r\n")
    elif clen is not None:
        lines += (b"Content-Length: ", clen, b"\r\n\r\n")
    else:
        lines.append(b"\r\n")
    return b"".join(lines)


# ---- response head
_VERDICTS: dict[frozenset, dict[bytes, int]] = {}
_NAMED: dict[bytes, tuple] = {}
_STATUS_LINES: dict[int, tuple[bytes, bytes]] = {}


def _classify(seen: dict, name: bytes, drop: frozenset) -> int:
    lname = name.lower()
    cls = RESP_CLASS.get(lname)
    if cls is None:
        cls = R_HOP if lname in drop else R_PASS
    if len(seen) < 256:
        seen[name] = cls
    return cls


def connection_named(value: bytes) -> tuple:
    """Field names a response's Connection header makes hop-by-hop, beyond the ones
    always dropped ("close" and "keep-alive" name nothing more). Cached per value."""
    named = _NAMED.get(value)
    if named is None:
        named = tuple(t for t in tokens(value) if t not in (b"close", b"keep-alive")
                      and RESP_CLASS.get(t) is None)
        if len(_NAMED) < 256:
            _NAMED[value] = named
    return named


def scan_response(status: int, reason: bytes, fields: list, drop: frozenset) -> tuple:
    """Split an upstream response head: ``(lines, content_length, transfer_encoding,
    via, upgrade)``. ``lines`` (pieces to join) hold the status line and the fields that
    pass: not hop-by-hop, not in ``drop``, not named by the Connection field."""
    known = _STATUS_LINES.get(status)
    if known is not None and known[0] == reason:
        lines = [known[1]]
    else:
        lines = [b"HTTP/1.1 %d %b\r\n" % (status, reason)]
        if len(_STATUS_LINES) < 64:
            _STATUS_LINES[status] = (reason, lines[0])
    # the class of each raw name already seen, per set of dropped names: an upstream
    # sends the same few names in every response
    seen = _VERDICTS.get(drop)
    if seen is None:
        if len(_VERDICTS) >= 1024:
            _VERDICTS.clear()
        seen = _VERDICTS[drop] = {}
    cl = te = via = upgrade = named = None
    for name, value in fields:
        cls = seen.get(name)
        if cls is None:
            cls = _classify(seen, name, drop)
        if not cls:
            lines += (name, b": ", value, b"\r\n")
        elif cls == R_CL:
            cl = value
        elif cls == R_TE:
            te = value
        elif cls == R_CONN:
            named = connection_named(value) if named is None else named + connection_named(value)
        elif cls == R_VIA:
            via = value if via is None else via + b", " + value
        elif cls == R_UPG:
            upgrade = value
    if named:  # fields the upstream's Connection names are hop-by-hop too (rare)
        lines[1:] = _passing(fields, drop.union(named))
    return lines, cl, te, via, upgrade


def _passing(fields: list, drop: frozenset) -> list:
    lines = []
    for name, value in fields:
        lname = name.lower()
        if lname not in RESP_CLASS and lname not in drop:
            lines += (name, b": ", value, b"\r\n")
    return lines


def response_framing(status: int, cl: bytes | None, te: bytes | None, chunked: bool) -> bytes:
    """The body framing line towards the client: the upstream's length when it sent
    one (and no Transfer-Encoding), chunked when the proxy re-chunks."""
    if cl is not None and te is None and status != 204:
        return b"Content-Length: " + cl + b"\r\n"
    return CHUNKED if chunked else b""


def response_head(lines: list, framing: bytes, extra: bytes, set_cookie: bytes | None,
                  via: bytes | None, rid: bytes, keep_alive: bool, http10: bool) -> bytes:
    """The client's response head: ``lines`` from ``scan_response``, the route's
    ``extra`` lines, a sticky-session cookie, the framing, Via, X-Request-ID, and the
    Connection field the client needs (none for HTTP/1.1 keep-alive)."""
    lines += (extra, set_cookie or b"", framing, b"Via: ", via + b", " + VIA if via else VIA,
              b"\r\nX-Request-ID: ", rid)
    if not keep_alive:
        lines.append(b"\r\nConnection: close\r\n\r\n")
    else:
        lines.append(b"\r\nConnection: keep-alive\r\n\r\n" if http10 else b"\r\n\r\n")
    return b"".join(lines)


def upgrade_response(reason: bytes, fields: list, drop: frozenset, rid: bytes) -> bytes | None:
    """The client's 101 head for a WebSocket upgrade, or None when the upstream's 101
    does not switch to websocket. Body framing fields of a 101 are dropped."""
    lines, _, _, via, upgrade = scan_response(101, reason or b"Switching Protocols", fields, drop)
    if upgrade is None or b"websocket" not in tokens(upgrade):
        return None
    lines += (b"Connection: upgrade\r\nUpgrade: ", upgrade, b"\r\nVia: ",
              via + b", " + VIA if via else VIA, b"\r\nX-Request-ID: ", rid, b"\r\n\r\n")
    return b"".join(lines)
