"""The hot path: client connections, request parsing and the exchange with an upstream.

``ClientConnection`` is the asyncio protocol of one client connection; it parses with
httptools (llhttp) and creates one ``Exchange`` per request. An exchange is started
only after the ``feed_data`` call that completed its headers returns, so a parse error
in that read leaves that request unsent. A parse error never costs the requests parsed
completely before it their responses: they are answered in order, then the error, then
the connection closes (RFC 9112 9.3.2). Bodies stream both ways with transport
pause/resume for backpressure; nothing is buffered whole.
"""
from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import re
import time
from typing import Any

from httptools import (HttpParserError, HttpParserInvalidMethodError, HttpParserUpgrade,
                       HttpRequestParser, parse_url)

from dataplane import acme, errorpages, errors, headers, policies, ratelimit
from dataplane.accesslog import NO_TLS
from dataplane.headers import (H_CL, H_CONN, H_EXPECT, H_HOST, H_IDENT, H_RID, H_TE, H_UPG,
                               H_VIA, REQ_CLASS, tokens)
from dataplane.outlier import CONNECT_FAILURE_CODES, FAILURE_CODES, OutlierDetector
from dataplane.router import normalize_host
from dataplane.tls import connection_info
from dataplane.upstream import UpstreamConnection, UpstreamError
from dataplane.websocket import Tunnel
from dataplane.diagnostics import HUB as _diag  # tail/capture: one flag check each

monotonic = time.monotonic

# ---- limits (defaults)
MAX_URL = 8 * 1024
MAX_HEADER = 8 * 1024
MAX_HEADERS_TOTAL = 32 * 1024
MAX_HEADER_COUNT = 100
HEADER_TIMEOUT = 10.0
BODY_IDLE_TIMEOUT = 30.0
KEEPALIVE_TIMEOUT = 60.0
PENDING_LIMIT = 64 * 1024   # request bytes held while the upstream connects
# Lingering close (as nginx's lingering_close): when the proxy closes a connection whose
# client may still be sending (a 413/502 before the request body ended, a pipelined tail),
# it half-closes and discards what arrives, so the kernel does not answer the unread bytes
# with a reset that destroys the response in the client's receive buffer.
LINGER_IDLE = 5.0    # seconds without bytes from the client
LINGER_TOTAL = 30.0  # seconds at most

IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
_RID_PREFIX = os.urandom(5).hex().encode() + b"-"
_rid_counter = itertools.count(1)

# response body framing towards the client
M_NONE, M_LENGTH, M_CHUNKED, M_CLOSE = range(4)
# body chunks at least this large are written on their own, not joined with the head
JOIN_LIMIT = 16384
# reasons client reading is paused (bit mask)
P_UPSTREAM, P_BUFFER, P_PIPELINE, P_UPGRADE, P_ERROR = 1, 2, 4, 8, 16
P_AUTH = 32  # a forward-auth subrequest runs (dataplane.forwardauth)
WS_REQUEST = b"Connection: upgrade\r\nUpgrade: websocket\r\n"
WS_MAX_MESSAGE = 4 * 1024 * 1024
WS_IDLE_TIMEOUT = 300.0
REDIRECT_HOST = re.compile(rb"[a-z0-9.-]+|\[[0-9a-f:.]+\]")
ALLOW = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
# the methods llhttp knows (HTTP mode); it refuses any other token before reading on
LLHTTP_METHODS = frozenset((
    b"DELETE", b"GET", b"HEAD", b"POST", b"PUT", b"CONNECT", b"OPTIONS", b"TRACE", b"COPY",
    b"LOCK", b"MKCOL", b"MOVE", b"PROPFIND", b"PROPPATCH", b"SEARCH", b"UNLOCK", b"BIND",
    b"REBIND", b"UNBIND", b"ACL", b"REPORT", b"MKACTIVITY", b"CHECKOUT", b"MERGE",
    b"M-SEARCH", b"NOTIFY", b"SUBSCRIBE", b"UNSUBSCRIBE", b"PATCH", b"PURGE", b"MKCALENDAR",
    b"LINK", b"UNLINK", b"SOURCE", b"QUERY"))
LINE_START = re.compile(rb"(?:^|(?<=\r\n))([!#$%&'*+.^_`|~0-9A-Za-z-]*)")
REQUEST_LINE_REST = re.compile(rb" [^\x00-\x20\x7f]+ HTTP/1\.[01]\r\n")


def _diag_parse(head: bytes) -> tuple:
    from dataplane.diagnostics import parse_head
    return parse_head(head)


def _diag_head(data: bytes) -> dict:
    line, fields = _diag_parse(data)
    parts = line.split(" ", 2)
    return {"status": int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None,
            "line": line, "headers": fields}


class Reject(Exception):
    """Raised from a parser callback: answer with errors code ``code`` and close."""

    def __init__(self, code: str):
        self.code = code


def _unknown_method_code(data: bytes) -> str:
    """The error code of a read llhttp stopped at an unknown method: 501 for a request
    line with a method token it does not know, 414 for a method longer than a request
    line may be, else 400. llhttp does not say where that message starts, so the first
    line-start in ``data`` whose token is not one of its methods is taken as it."""
    for m in LINE_START.finditer(data):
        method = m.group(1)
        if len(method) > MAX_URL:
            return "uri_too_long"
        if (method and method not in LLHTTP_METHODS
                and REQUEST_LINE_REST.match(data, m.end()) is not None):
            return "method_not_implemented"
    return "bad_request"


def new_request_id() -> bytes:
    return _RID_PREFIX + b"%x" % next(_rid_counter)


def _authority(host: bytes, port: int | None, default: int) -> bytes:
    host = host.lower().rstrip(b".")
    return host if port is None or port == default else host + b":%d" % port


def _check_absolute_form(url: bytes, host_header: bytes) -> None:
    """An absolute-form target must name the same authority as the Host header (RFC 9112
    3.2.2 lets the target win; a proxy that routes on one while a cache or WAF in front
    keyed on the other is a classic desync, so a mismatch is refused)."""
    try:
        u = parse_url(url)
    except HttpParserError:
        raise Reject("bad_request") from None
    if u.userinfo or not u.host:
        raise Reject("bad_request")
    default = 443 if u.schema.lower() == b"https" else 80
    h = host_header.strip()
    hport = None
    colon = h.rfind(b":")
    if colon > h.rfind(b"]"):
        if not h[colon + 1:].isdigit():
            raise Reject("bad_request")
        h, hport = h[:colon], int(h[colon + 1:])
    if _authority(u.host, u.port, default) != _authority(h.strip(b"[]"), hport, default):
        raise Reject("bad_request")


class ProxyServer:
    """What every client connection of one listener shares."""

    def __init__(self, state: Any, access_log: Any, port: int,
                 trusted_proxies: tuple = (), scheme: bytes = b"http", https_port: int = 443,
                 ws_idle_timeout: float = WS_IDLE_TIMEOUT,
                 ws_max_message: int = WS_MAX_MESSAGE):
        self.state = state
        self.metrics = state.metrics
        self.log = access_log
        self.port = port
        self.port_b = str(port).encode()
        self.scheme = scheme
        self.tls = scheme == b"https"
        self.https_port_b = b"" if https_port == 443 else b":%d" % https_port
        self.ws_idle_timeout = ws_idle_timeout
        self.ws_max_message = ws_max_message
        self.trusted = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)
        self.connections: set[ClientConnection] = set()
        self.draining = False
        # client deadlines and the connection cap (node flags; tests shorten them)
        self.header_timeout = HEADER_TIMEOUT
        self.body_idle_timeout = BODY_IDLE_TIMEOUT
        self.keepalive_timeout = KEEPALIVE_TIMEOUT
        self.max_connections = 0  # 0: no cap
        self.refused_connections = 0
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the first connection
        from dataplane.accesslog import route_prefix
        self.no_route_prefix = route_prefix(state.node_name, None, None)

    def __call__(self) -> "ClientConnection":
        return ClientConnection(self)

    def is_trusted(self, ip: str) -> bool:
        if not self.trusted:
            return False
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr.version == n.version and addr in n for n in self.trusted)

    def sweep(self) -> None:
        """Client deadlines, checked once a second instead of a timer per request."""
        now = monotonic()
        for c in list(self.connections):
            c.check_deadlines(now)

    def drain(self) -> None:
        self.draining = True
        for c in list(self.connections):
            if c.active is None and not c.in_head and not c.queue:
                c.close()


class ClientConnection(asyncio.Protocol):
    __slots__ = ("server", "transport", "parser", "cur", "active", "queue", "client_ip",
                 "client_b", "trusted", "ident", "paused", "write_paused", "in_head",
                 "head_bytes", "idle_since", "head_started", "last_rx", "requests", "closed",
                 "cert", "tls_log", "host_ok", "lingering", "half_closed", "discard", "addr_key")

    def __init__(self, server: ProxyServer):
        self.server = server
        self.transport = None
        self.parser = HttpRequestParser(self)
        self.cur: Exchange | None = None      # the request being parsed
        self.active: Exchange | None = None   # the request being proxied
        self.queue: list[Exchange] = []       # pipelined requests, headers complete
        self.paused = 0
        self.write_paused = False
        self.in_head = False
        self.head_bytes = 0
        self.requests = 0
        self.closed = False
        self.cert = None        # HTTPS: the tls.CertEntry the handshake's SNI selected
        self.tls_log = NO_TLS   # access-log fragment: tls version and SNI
        self.host_ok = None     # HTTPS: last Host that passed the tenant check
        self.lingering = 0.0    # when a lingering close started (0: not lingering)
        self.half_closed = False  # the client sent FIN after complete requests
        self.discard = False    # a parse error or a lingering close: bytes read are dropped
        self.addr_key = False   # the peer as policies.address_key gives it (False: not yet)

    # ---- transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        server = self.server
        if server.loop is None:  # get_running_loop() costs a getpid() call: once here
            server.loop = asyncio.get_running_loop()
        if server.max_connections and len(server.connections) >= server.max_connections:
            # over the cap: close at once, before reading anything (no state kept)
            server.refused_connections += 1
            self.closed = True
            transport.abort()
            return
        server.connections.add(self)
        server.metrics.active_connections += 1
        peer = transport.get_extra_info("peername")
        ip = peer[0] if peer else "unknown"
        self.client_ip = ip
        self.client_b = ip.encode()
        self.trusted = server.is_trusted(ip)
        # identity headers for a peer whose own values are not trusted: fixed per connection
        self.ident = headers.untrusted_identity(self.client_b, server.scheme, server.port_b)
        now = monotonic()
        self.idle_since = self.head_started = self.last_rx = now
        if server.tls:
            self.cert, self.tls_log = connection_info(transport)

    def data_received(self, data: bytes) -> None:
        self.last_rx = monotonic()
        if self.discard:
            return
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as upg:
            # The parser stops at an upgrade request: a WebSocket becomes a tunnel on a
            # 101; anything else is forwarded without Upgrade and the connection closes.
            ex = self.cur
            if ex is not None:
                ex.keep_alive = False
                ex.upg_req = True
                off = upg.args[0] if upg.args and isinstance(upg.args[0], int) else len(data)
                if off < len(data):
                    ex.early = data[off:]
            self.pause(P_UPGRADE)
        except HttpParserError as exc:
            if isinstance(exc.__context__, Reject):
                code = exc.__context__.code
            elif isinstance(exc, HttpParserInvalidMethodError) or str(exc).startswith(
                    "Invalid method"):
                code = _unknown_method_code(data)
            else:
                code = "bad_request"
            self.reject(code)
            return
        if self.in_head and self.head_bytes > MAX_HEADERS_TOTAL + MAX_URL:
            self.reject("headers_too_large")
            return
        if self.active is None and self.queue:
            self.start_next()

    def eof_received(self) -> bool:
        """The client half-closed. Requests it sent completely are still answered (like
        nginx and HAProxy), then the connection closes; a partial one never completes."""
        if self.closed or self.lingering or self.server.tls:  # TLS cannot stay half-open
            return False
        if self.discard:  # after a parse error: what is queued is answered, then it closes
            return True
        cur = self.cur
        pending = self.active is not None or bool(self.queue)
        if not pending or self.in_head or (cur is not None and not cur.req_complete):
            return False
        self.half_closed = True
        for ex in (self.active, *self.queue):
            if ex is not None and not ex.resp_started:
                ex.keep_alive = False  # the response says Connection: close
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        if self not in server.connections:  # refused by the connection cap
            self.closed = True
            return
        self.closed = True
        server.connections.discard(self)
        server.metrics.active_connections -= 1
        for ex in (self.active, *self.queue):
            if ex is not None:
                ex.client_gone()
        self.active = None
        self.queue = []

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.active
        if ex is not None and ex.up is not None and not ex.up_paused:
            ex.up.transport.pause_reading()
            ex.up_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.active
        if ex is not None and ex.up is not None and ex.up_paused:
            ex.up.transport.resume_reading()
            ex.up_paused = False

    # ---- httptools callbacks
    def on_message_begin(self) -> None:
        self.cur = Exchange(self)
        self.in_head = True
        self.head_bytes = 0
        self.head_started = monotonic()

    def on_url(self, url: bytes) -> None:
        ex = self.cur
        ex.url += url
        if len(ex.url) > MAX_URL:
            raise Reject("uri_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.cur
        lname = name.lower()
        ex.headers.append((lname, name, value))
        size = len(name) + len(value) + 4
        ex.head_size += size
        if size > MAX_HEADER or ex.head_size > MAX_HEADERS_TOTAL:
            raise Reject("headers_too_large")
        if len(ex.headers) > MAX_HEADER_COUNT:
            raise Reject("headers_too_large")
        cls = REQ_CLASS.get(lname)
        if cls is not None:
            ex.special(cls, lname, value)

    def on_headers_complete(self) -> None:
        self.in_head = False
        ex = self.cur
        parser = self.parser
        ex.method = parser.get_method()
        ex.http10 = parser.get_http_version() == "1.0"
        ex.keep_alive = parser.should_keep_alive() and not self.server.draining
        ex.check_head()
        self.queue.append(ex)

    def on_body(self, chunk: bytes) -> None:
        self.cur.request_body(chunk)

    def on_message_complete(self) -> None:
        self.cur.request_done()

    # ---- exchange sequencing
    def start_next(self) -> None:
        ex = self.queue.pop(0)
        self.active = ex
        if self.queue:
            self.pause(P_PIPELINE)
        ex.start()

    def exchange_finished(self, ex: "Exchange") -> None:
        if self.active is not ex:
            return
        self.active = None
        if self.cur is ex and ex.req_complete:
            self.cur = None  # an idle keep-alive connection holds no finished exchange
        self.requests += 1
        self.idle_since = monotonic()
        if not ex.keep_alive or (self.server.draining or self.half_closed) and not self.queue:
            self.close(linger=not ex.req_complete or bool(self.queue))
            return
        if self.queue:
            self.start_next()
        if not self.queue:
            self.unpause(P_PIPELINE)

    def pause(self, bit: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= bit

    def unpause(self, bit: int) -> None:
        if self.paused & bit:
            self.paused &= ~bit
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    def hand_over_to(self, tunnel: Tunnel) -> None:
        """A 101 made this connection one end of ``tunnel``: nothing more is parsed, and
        the flow-control state (which side's write buffer is full) goes with it."""
        upstream_full = bool(self.paused & P_UPSTREAM)
        self.paused = 0
        tunnel.start(self.write_paused, upstream_full)

    def reject(self, code: str) -> None:
        """A parse error in the message being read. Requests parsed completely before it
        keep their responses, in order; the error answers this message after them, and
        the connection closes. Nothing more is parsed."""
        self.discard = True
        self.in_head = False
        cur = self.cur
        bad = cur if cur is not None and not cur.req_complete else Exchange(self)
        bad.keep_alive = False
        if bad is self.active:  # its body is malformed while it is proxied
            if bad.resp_started:
                bad.abort_client(code)
            else:
                bad.fail(code, force_close=True)
            self.close(linger=True)
            return
        bad.refused = code
        if bad not in self.queue:
            self.queue.append(bad)
        self.pause(P_ERROR)
        if self.active is None:
            self.start_next()

    def close(self, linger: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        transport = self.transport
        if linger and transport.can_write_eof():  # TLS cannot half-close: closes at once
            try:
                transport.write_eof()  # FIN after the response is flushed
            except (OSError, RuntimeError):
                transport.close()
                return
            self.lingering = monotonic()
            self.discard = True
            self.queue = []
            if self.paused:
                self.paused = 0
                transport.resume_reading()
            return
        transport.close()

    def check_deadlines(self, now: float) -> None:
        if self.lingering:
            if now - self.last_rx > LINGER_IDLE or now - self.lingering > LINGER_TOTAL:
                self.transport.abort()
            return
        ex = self.active
        if ex is not None:
            if not ex.req_complete and now - self.last_rx > self.server.body_idle_timeout:
                ex.abort_client("http_request_error")
        elif self.in_head:
            if now - self.head_started > self.server.header_timeout:
                self.close()
        elif not self.queue:
            server = self.server
            limit = server.keepalive_timeout if self.requests else server.header_timeout
            if now - self.idle_since > limit or self.server.draining:
                self.close()


class Exchange:
    """One request and its response."""

    __slots__ = (
        "conn", "t0", "url", "headers", "head_size", "method", "http10", "keep_alive",
        "host_raw", "clen", "te", "chunked", "conn_tokens", "ident_in", "via", "rid", "expect",
        "route", "pool", "target", "tried", "retries", "last_error", "up", "up_last", "timer",
        "req_line", "head_rest", "pending", "pending_size", "body_in", "body_expected",
        "req_complete", "resp_started", "resp_done", "mode", "status", "upstream_status",
        "interim", "bytes_out", "connect_time", "first_byte", "sent_at", "logged",
        "stale_retry", "dead", "up_paused", "host_s", "path_b", "eof_body", "out",
        "upgrade", "upg_req", "ws", "early", "set_cookie", "cap", "refused", "detail",
        "auth_lines",  # forward auth: None until the auth service said 2xx, then its copied lines
    )

    def __init__(self, conn: ClientConnection):
        self.conn = conn
        self.t0 = monotonic()
        self.url = b""
        self.headers: list = []
        self.head_size = 16
        self.host_raw = self.clen = self.te = self.via = self.rid = self.expect = None
        self.conn_tokens = None
        self.ident_in = None
        self.chunked = False
        self.route = self.pool = self.target = self.up = self.timer = None
        self.tried: tuple = ()
        self.retries = 0
        self.last_error = ""
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.body_in = 0
        self.body_expected = False
        self.req_complete = self.resp_started = self.resp_done = False
        self.mode = M_NONE
        self.status = 0
        self.upstream_status = None
        self.interim = False
        self.bytes_out = 0
        self.connect_time = self.first_byte = None
        self.sent_at = 0.0
        self.up_last = 0.0
        self.logged = False
        self.stale_retry = False
        self.set_cookie = None  # a sticky-session Set-Cookie line chosen by the balancer
        self.dead = False
        self.up_paused = False
        self.host_s = ""
        self.path_b = b""
        self.eof_body = False
        self.out = None  # response bytes gathered during one upstream read, one write
        self.keep_alive = False
        self.method = b""
        self.http10 = False
        self.upgrade = None    # the Upgrade header
        self.upg_req = False   # the parser stopped at this request: an upgrade
        self.ws = False        # a WebSocket upgrade on a route that allows it
        self.early = b""       # client bytes after the upgrade request
        self.cap = None        # diagnostics: the capture record when capture is armed
        self.refused = ""      # a parse error code: answered with it in its turn
        self.detail = None     # a policy refusal's details (access list name): logged reason
        self.auth_lines = None  # forward auth: header lines for the upstream (bytes) once allowed

    # ---- request head
    def special(self, cls: int, lname: bytes, value: bytes) -> None:
        if cls == H_HOST:
            if self.host_raw is not None:
                raise Reject("invalid_host")
            self.host_raw = value
        elif cls == H_CL:
            value = value.strip(b" \t")
            if self.clen is not None or not value.isdigit() or len(value) > 18:
                raise Reject("bad_request")
            self.clen = value
        elif cls == H_TE:
            self.te = value if self.te is None else self.te + b", " + value
        elif cls == H_CONN:
            toks = tokens(value)
            self.conn_tokens = toks if self.conn_tokens is None else self.conn_tokens + toks
        elif cls == H_IDENT:
            d = self.ident_in
            if d is None:
                d = self.ident_in = {}
            d[lname] = d[lname] + b", " + value if lname in d else value
        elif cls == H_VIA:
            self.via = value if self.via is None else self.via + b", " + value
        elif cls == H_RID:
            self.rid = value if self.rid is None else b""  # two ids: invalid, generate one
        elif cls == H_EXPECT:
            self.expect = value
        elif cls == H_UPG:
            self.upgrade = value if self.upgrade is None else self.upgrade + b", " + value

    def check_head(self) -> None:
        """Framing and Host checks; raising Reject here means nothing went upstream."""
        if self.te is not None:
            # only "chunked", once: other codings cannot be re-framed, HTTP/1.0 has no TE
            if self.clen is not None or self.http10 or tokens(self.te) != [b"chunked"]:
                raise Reject("bad_request")
            self.chunked = self.body_expected = True
        elif self.clen is not None:
            self.body_expected = self.clen != b"0" and int(self.clen) > 0
        if self.host_raw is None and not self.http10:
            raise Reject("invalid_host")
        if self.url[:1] != b"/" and self.host_raw is not None and self.url[:4].lower() == b"http":
            _check_absolute_form(self.url, self.host_raw)
        rid = self.rid
        if rid is None or REQUEST_ID.fullmatch(rid) is None:
            self.rid = new_request_id()

    # ---- request body
    def request_body(self, chunk: bytes) -> None:
        n = len(chunk)
        self.body_in += n
        if self.resp_done or self.dead:
            return
        route = self.route
        if route is not None and route.max_body_size and self.body_in > route.max_body_size:
            self.body_too_large()
            return
        if self.chunked:
            chunk = b"%x\r\n%b\r\n" % (n, chunk)
        up = self.up
        if up is not None:
            up.transport.write(chunk)
            self.up_last = monotonic()
        else:
            self.pending.append(chunk)
            self.pending_size += len(chunk)
            if self.pending_size > PENDING_LIMIT:
                self.conn.pause(P_BUFFER)

    def request_done(self) -> None:
        self.req_complete = True
        if self.chunked and not self.resp_done:
            if self.up is not None:
                self.up.transport.write(b"0\r\n\r\n")
            else:
                self.pending.append(b"0\r\n\r\n")
        if self.resp_done:
            self.conn.exchange_finished(self)

    def body_too_large(self) -> None:
        self.keep_alive = False
        if self.up is not None:
            self.detach_upstream(abort=True)
        if self.resp_started:
            self.abort_client("body_too_large")
        else:
            self.fail("body_too_large", force_close=True)

    # ---- routing and upstream selection
    def start(self) -> None:
        """Route the request whose head is complete, then forward it."""
        if self.refused:
            return self.fail(self.refused, force_close=True)
        url = self.url
        if url[:1] != b"/":
            url = self.absolute_target(url)
            if url is None:
                return
        q = url.find(b"?")
        path_b = url if q < 0 else url[:q]
        self.path_b = path_b
        host_raw = self.host_raw
        if host_raw is None:  # HTTP/1.0 may leave it out: only a route for no host serves it
            host_s = ""
        else:
            host_s = normalize_host(host_raw)
            if host_s is None:
                self.host_s = host_raw.decode("latin-1")  # logged as received
                return self.fail("invalid_host")
        self.host_s = host_s
        if self.via is not None and headers.via_loops(self.via):
            return self.fail("proxy_loop_detected")
        conn = self.conn
        tables = conn.server.state.tables
        if conn.cert is not None and host_s != conn.host_ok and self.misdirected(tables, host_s):
            return self.fail("misdirected_request")
        if path_b.startswith(acme.HTTP01_PATH) and not conn.server.tls:  # never routed
            answer = acme.http01(tables.acme.http01, self.method, path_b)
            return self.reply(*answer) if answer is not None else self.fail("destination_not_found")
        route = tables.router.match(host_s, path_b.decode("latin-1"), self.method, self.headers)
        if route is None:
            return self.fail("destination_not_found" if host_raw is not None else "invalid_host")
        self.route = route
        if _diag.capturing:
            self.cap = _diag.capture_for(self, route)
        self.forward(route, url)

    def absolute_target(self, url: bytes) -> bytes | None:
        """The origin-form of a target that is not one (an absolute-form target's
        authority becomes the Host); None once the request is answered or refused."""
        if url[:7].lower() == b"http://" or url[:8].lower() == b"https://":
            try:
                u = parse_url(url)
            except HttpParserError:
                self.fail("bad_request")
                return None
            self.host_raw = (u.host or b"") + (b":%d" % u.port if u.port else b"")
            return (u.path or b"/") + (b"?" + u.query if u.query else b"")
        if url == b"*" and self.method == b"OPTIONS":
            self.answer_options()
        else:
            self.fail("bad_request")
        return None

    def misdirected(self, tables: Any, host_s: str) -> bool:
        """On HTTPS the Host's certificate must belong to the tenant of the SNI's one."""
        conn = self.conn
        owner = tables.certs.for_host(host_s)
        if owner is not None and owner.tenant != conn.cert.tenant:
            return True
        conn.host_ok = host_s
        return False

    def forward(self, route: Any, url: bytes) -> None:
        """The route's own checks, the upstream request head, then an upstream."""
        conn = self.conn
        acl = route.access
        key = None
        if acl is not None and not acl.allows(key := self.client_key()) and not acl.any:
            self.detail = acl.detail  # (satisfy any: a valid password still admits the client)
            return self.fail("access_denied", template=acl.template)
        if route.https_redirect and not conn.server.tls:
            return self.redirect(url)
        # basic auth (dataplane.basicauth), after the redirect so no password goes in clear:
        # a cached Authorization value is a dict lookup; else 401/429 or a wait for the hash
        # that resumes with forward() (so the checks below run once per request)
        if (acl is not None and acl.auth is not None and not (acl.any and acl.allows(key))
                and not acl.auth.admits(self, route, url, key)):
            return
        auth = route.basic_auth  # the route's own users: the same Authorization, checked too
        if auth is not None and not auth.admits(self, route, url, key if acl is not None else self.client_key()):
            return
        if route.rate_limits:  # dataplane.ratelimit: the route's, then its tenant's buckets
            wait = ratelimit.admit(route.rate_limits, self)
            if wait:
                self.detail = ratelimit.DETAIL
                return self.fail("rate_limited", template=ratelimit.template(wait))
        fa = route.forward_auth
        if fa is not None and self.auth_lines is None:  # ask the auth service first; it
            return fa.ask(self, url)                     # resumes with proceed() on a 2xx
        self.proceed(route, url)

    def proceed(self, route: Any, url: bytes) -> None:
        """The forward step once the route's access policies let the request through."""
        conn = self.conn
        if route.maintenance is not None:  # answered here: the pool is never touched
            self.detail = route.maintenance.detail
            return self.fail("maintenance", template=route.maintenance.pick(self.headers))
        # an upgrade needs Connection: upgrade too (the parser's verdict, RFC 9110 7.8);
        # without it the Upgrade header is dropped and the request is a plain one
        if self.upg_req and self.upgrade is not None and b"websocket" in self.upgrade.lower():
            if not route.websocket:
                return self.fail("websocket_denied")
            if self.method == b"GET" and not self.body_expected:
                self.ws = True
        limit = route.max_body_size
        if limit and (self.body_in > limit or (self.clen is not None and int(self.clen) > limit)):
            return self.fail("body_too_large", force_close=True)
        if route.strip_prefix and route.path_type == "prefix" and route.path != "/":
            rest = url[len(route.path):]
            url = rest if rest[:1] == b"/" else b"/" + rest
        if (self.expect is not None and self.body_expected and not self.req_complete
                and not self.http10 and self.expect.lower() == b"100-continue"):
            conn.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.req_line = self.method + b" " + url + b" HTTP/1.1\r\n"
        self.head_rest = self.build_head(route)
        if self.ws:
            self.head_rest = WS_REQUEST + self.head_rest
        self.pool = route.pool
        self.attempt()

    def client_key(self) -> tuple[int, int] | None:
        """The client address as SPEC 4 determines it, for access lists: the peer, or for
        a peer inside trusted_proxies the address its X-Forwarded-For names."""
        conn = self.conn
        key = conn.addr_key
        if key is False:
            key = conn.addr_key = policies.address_key(conn.client_ip)
        if conn.trusted and self.ident_in is not None:
            xff = self.ident_in.get(b"x-forwarded-for")
            if xff and not (self.conn_tokens and b"x-forwarded-for" in self.conn_tokens):
                return policies.forwarded_client(xff, key, conn.server.is_trusted)
        return key

    def build_head(self, route: Any) -> bytes:
        """The upstream request head after the request line and Host."""
        conn = self.conn
        server = conn.server
        host = self.host_raw or b""
        conn_tokens = self.conn_tokens
        if self.ident_in is None or not conn.trusted:
            identity = (conn.ident, b"X-Forwarded-Host: ", host, b"\r\n")
            previous = None
        else:
            identity, previous = headers.trusted_identity(
                self.ident_in, conn_tokens, conn.client_b, server.scheme, server.port_b, host)
        if route.forwarded:
            forwarded = headers.forwarded_line(conn.client_ip, server.scheme, host, previous)
        else:
            forwarded = b"" if previous is None else b"Forwarded: " + previous + b"\r\n"
        drop, extra = route.req_drop, route.req_extra
        if self.auth_lines is not None:  # forward auth: its names dropped, its values added
            drop, extra = route.forward_auth.req_drop, extra + self.auth_lines
        return headers.request_head(self.headers, drop, conn_tokens, extra,
                                    identity, forwarded, self.via, self.rid, self.chunked, self.clen)

    def attempt(self) -> None:
        pool = self.pool
        t = pool.balancer.pick(self, self.tried)
        if t is None:
            return self.fail(self.last_error or "destination_unavailable")
        self.target = t
        c = t.hostpool.acquire()
        if c is not None:
            self.send(c)
        else:
            asyncio.ensure_future(self.connect(t))

    async def connect(self, t: Any) -> None:
        t0 = monotonic()
        pool = self.pool
        try:
            c = await t.hostpool.connect(pool.connect_timeout, pool.policy)
        except UpstreamError as e:
            if self.dead or self.resp_done:
                return
            self.last_error = e.code
            if e.code in CONNECT_FAILURE_CODES:
                OutlierDetector.connect_failed(t, e.code)
            if e.code in FAILURE_CODES:
                self.target_failed()
            if self.retries < pool.retries and self.method in IDEMPOTENT:
                self.retries += 1
                self.tried += (t,)
                return self.attempt()
            return self.fail(e.code)
        except Exception:  # noqa: BLE001 - never leave a client hanging on a bug
            if not self.dead:
                self.fail("proxy_internal_error", force_close=True)
            return
        o = t.outlier
        if o is not None and o.run:
            o.run = 0  # a connect succeeded: the run of connect failures is over
        if self.dead or self.resp_done:
            c.hostpool.release(c)
            return
        self.connect_time = monotonic() - t0
        self.send(c)

    def send(self, c: UpstreamConnection) -> None:
        self.up = c
        c.exchange = self
        c.head_request = self.method == b"HEAD"
        t = self.target
        t.active += 1
        host_line = (b"Host: " + self.host_raw + b"\r\n"
                     if self.route.preserve_host and self.host_raw else t.host_header)
        head = self.req_line + host_line + self.head_rest
        if self.cap is not None:
            self.capture_upstream(head, t)
        if self.pending:
            head += b"".join(self.pending)
            self.pending = []
            self.pending_size = 0
            self.conn.unpause(P_BUFFER)
        c.transport.write(head)
        now = monotonic()
        self.sent_at = self.up_last = now
        if self.conn.write_paused:
            c.transport.pause_reading()
            self.up_paused = True
        self.timer = self.conn.server.loop.call_later(self.pool.read_timeout, self.on_timer)

    def on_timer(self) -> None:
        self.timer = None
        if self.resp_done or self.up is None:
            return
        rt = self.pool.read_timeout
        idle = monotonic() - self.up_last
        if idle < rt:
            self.timer = self.conn.server.loop.call_later(rt - idle + 0.001, self.on_timer)
            return
        if self.resp_started:
            self.abort_client("http_response_timeout")
        else:
            self.detach_upstream(abort=True)
            self.target_failed()
            self.keep_alive = self.keep_alive and self.req_complete
            self.fail("http_response_timeout", force_close=not self.req_complete)

    # ---- diagnostics: request capture (only when armed for this exchange)
    def capture_upstream(self, head: bytes, t: Any) -> None:
        line, fields = _diag_parse(head)
        self.cap["attempts"] += 1
        self.cap["upstream_request"] = {"target": t.addr, "line": line, "headers": fields}

    def capture_response(self, status: int, reason: bytes, fields: list, data: bytes) -> None:
        from dataplane.diagnostics import _headers
        self.cap["upstream_response"] = {"status": status, "reason": reason.decode("latin-1"),
                                         "headers": _headers(fields)}
        self.cap["client_response"] = _diag_head(data)

    def detach_upstream(self, abort: bool = False) -> None:
        c = self.up
        if c is None:
            return
        self.up = None
        self.target.active -= 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if abort:
            c.abort()

    # ---- response from upstream (called by UpstreamConnection)
    def upstream_head(self, c: UpstreamConnection, status: int, reason: bytes,
                      fields: list) -> None:
        if status < 200:
            if status == 101:
                if self.ws:
                    return self.upgrade_head(reason, fields)
                raise HttpParserError("unexpected 101 Switching Protocols")
            self.interim = True  # 1xx: not relayed; Expect is answered by the proxy itself
            return
        self.interim = False
        self.first_byte = monotonic() - self.sent_at
        self.upstream_status = self.status = status
        if status >= 500:
            self.target_failed()
        else:
            o = self.target.outlier
            if o is not None and o.fails:
                o.fails = 0
        route = self.route
        tls = self.conn.server.tls
        lines, cl, te, via, _ = headers.scan_response(
            status, reason, fields, route.resp_drop_tls if tls else route.resp_drop)
        mode = self.body_mode(status, cl, te)
        if mode == M_LENGTH:
            c.body_left = int(cl)  # llhttp accepted it: digits only
        self.relay_head(reason, fields, headers.response_head(
            lines, headers.response_framing(status, cl, te, mode == M_CHUNKED),
            route.resp_extra_tls if tls else route.resp_extra, self.set_cookie, via, self.rid,
            self.keep_alive, self.http10))

    def body_mode(self, status: int, cl: bytes | None, te: bytes | None) -> int:
        """How the response body is framed towards the client; a body whose end only the
        close can tell closes the connection."""
        if self.method == b"HEAD" or status == 204 or status == 304:
            mode = M_NONE
        elif te is not None:
            mode = M_CLOSE if self.http10 else M_CHUNKED
        elif cl is not None:
            mode = M_LENGTH
        else:  # the upstream delimits the body by closing
            self.eof_body = True
            mode = M_CLOSE if self.http10 else M_CHUNKED
        self.mode = mode
        if mode == M_CLOSE or self.conn.server.draining:  # draining: tell the client
            self.keep_alive = False
        return mode

    def upgrade_head(self, reason: bytes, fields: list) -> None:
        """A 101 to a WebSocket upgrade: relay it; the tunnel starts once the parser
        hands over the bytes after it (upstream_upgraded)."""
        self.first_byte = monotonic() - self.sent_at
        self.upstream_status = self.status = 101
        route = self.route
        drop = route.resp_drop_tls if self.conn.server.tls else route.resp_drop
        data = headers.upgrade_response(reason, fields, drop, self.rid)
        if data is None:
            raise HttpParserError("101 without Upgrade: websocket")
        self.relay_head(reason, fields, data)

    def relay_head(self, reason: bytes, fields: list, data: bytes) -> None:
        """The client's response head, written with the body bytes of the same read."""
        if self.cap is not None:
            self.capture_response(self.status, reason, fields, data)
        self.resp_started = True
        self.bytes_out += len(data)
        self.out = [data]

    def upstream_upgraded(self, c: UpstreamConnection, rest: bytes) -> None:
        """The upstream switched protocols: both connections become a byte tunnel."""
        self.flush()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        conn = self.conn
        if conn.closed or self.dead:
            self.detach_upstream(abort=True)
            return
        self.resp_done = True
        self.up_paused = False  # the tunnel's two sides do the flow control from here
        conn.hand_over_to(Tunnel(self, c, rest))

    def upstream_body(self, chunk: bytes) -> None:
        if self.interim:
            return
        if self.mode == M_CHUNKED:
            chunk = b"%x\r\n%b\r\n" % (len(chunk), chunk)
        self.bytes_out += len(chunk)
        if self.out is not None:
            if len(chunk) < JOIN_LIMIT:
                self.out.append(chunk)
                return
            self.flush()  # a large chunk is written as it is rather than copied by a join
        self.conn.transport.write(chunk)

    def flush(self) -> None:
        """Write what one upstream read produced (head and body) with one call."""
        out = self.out
        if out is not None:
            self.out = None
            if not self.conn.closed:
                self.conn.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def upstream_done(self, c: UpstreamConnection, keep: bool) -> None:
        if self.interim:
            self.interim = False
            return
        if self.status == 101:  # the tunnel takes over (upstream_upgraded)
            return
        if self.mode == M_CHUNKED:
            if self.out is not None:
                self.out.append(b"0\r\n\r\n")
            else:
                self.conn.transport.write(b"0\r\n\r\n")
            self.bytes_out += 5
        self.flush()
        self.detach_upstream()
        if self.up_paused:
            c.transport.resume_reading()
            self.up_paused = False
        if keep and self.req_complete and not self.ws:
            c.hostpool.release(c)
        else:
            c.close()
        self.resp_done = True
        if not self.req_complete:
            self.keep_alive = False
        self.finish(self.status, "")
        if self.req_complete or not self.keep_alive:
            self.conn.exchange_finished(self)

    def upstream_lost(self, c: UpstreamConnection) -> None:
        if self.resp_done or self.up is not c:
            return
        if self.resp_started:
            if self.eof_body:  # close-delimited body: EOF is its end
                return self.upstream_done(c, False)
            self.target_failed()
            return self.abort_client("http_response_incomplete")
        self.detach_upstream()
        if (c.reused and not c.received and not self.stale_retry and not self.body_expected
                and self.method in IDEMPOTENT):
            # a pooled connection the upstream had closed: try once more on a new one
            self.stale_retry = True
            asyncio.ensure_future(self.connect(self.target))
            return
        self.target_failed()
        self.fail("connection_terminated")

    def upstream_failed(self, c: UpstreamConnection, code: str) -> None:
        self.target_failed()
        if self.resp_started:
            self.detach_upstream(abort=True)
            return self.abort_client("http_response_incomplete")
        self.detach_upstream(abort=True)
        self.fail(code, force_close=not self.req_complete)

    def target_failed(self) -> None:
        """Passive health: count a failure of the current target (outlier.py)."""
        pool, t = self.pool, self.target
        if pool is not None and t is not None and pool.outlier is not None:
            pool.outlier.failure(t, pool)

    def pause_client(self, pause: bool) -> None:
        if pause:
            self.conn.pause(P_UPSTREAM)
        else:
            self.conn.unpause(P_UPSTREAM)

    # ---- endings
    def fail(self, code: str, force_close: bool = False, template: Any = None) -> None:
        """Answer with a generated error response (``template``: one built at apply time,
        such as an access list's 403, logged and counted as ``code``)."""
        if self.resp_done:
            return
        if self.up is not None:
            self.detach_upstream(abort=True)
        conn = self.conn
        close = (force_close or not self.keep_alive or conn.server.draining
                 or (self.body_expected and not self.req_complete))
        if close:
            self.keep_alive = False
        rid = self.rid or new_request_id()
        route = self.route  # its error pages, or the platform's (dataplane.errorpages)
        pages = route.pages if route is not None and route.pages is not None else conn.server.state.tables.pages
        data = errorpages.render(pages, code, template, rid, close, self.http10,
                                 self.method == b"HEAD", self.headers)
        if self.cap is not None:
            self.cap["client_response"] = _diag_head(data)
        if not conn.closed:
            conn.transport.write(data)
        self.bytes_out += len(data)
        self.resp_started = self.resp_done = True
        if self.pending_size:  # the body held while connecting is dropped: read on
            self.pending_size = 0
            conn.unpause(P_BUFFER)
        self.pending = []
        self.finish(template.status if template is not None else errors.status_of(code), code)
        if self.req_complete or close:
            conn.exchange_finished(self)

    def redirect(self, url: bytes) -> None:
        """https_redirect on the plain listener: 308 to the same host and target."""
        host = self.host_s.encode("latin-1")
        if REDIRECT_HOST.fullmatch(host) is None:
            return self.fail("bad_request")
        body = b"" if self.method == b"HEAD" else b"308 Permanent Redirect\n"
        self.reply(b"308 Permanent Redirect", b"Location: https://" + host
                   + self.conn.server.https_port_b + url + b"\r\nContent-Type: text/plain\r\n"
                   b"Content-Length: 23\r\nCache-Control: no-store\r\n", body)

    def answer_options(self) -> None:
        """OPTIONS * asks about the server itself: the proxy answers for all its routes."""
        self.reply(b"200 OK", b"Allow: " + ALLOW + b"\r\nContent-Length: 0\r\n", b"")

    def reply(self, status_line: bytes, lines: bytes, body: bytes) -> None:
        """A response the proxy makes itself that is not an error."""
        conn = self.conn
        close = not self.keep_alive or (self.body_expected and not self.req_complete)
        if close:
            self.keep_alive = False
        data = (b"HTTP/1.1 " + status_line + b"\r\n" + lines + b"X-Request-ID: " + self.rid
                + (b"\r\nConnection: close\r\n\r\n" if close else
                   b"\r\nConnection: keep-alive\r\n\r\n" if self.http10 else b"\r\n\r\n")
                + body)
        if not conn.closed:
            conn.transport.write(data)
        self.bytes_out += len(data)
        self.status = int(status_line[:3])
        self.resp_started = self.resp_done = True
        if self.pending_size:
            self.pending_size = 0
            conn.unpause(P_BUFFER)
        self.pending = []
        self.finish(self.status, "")
        if self.req_complete or close:
            conn.exchange_finished(self)

    def abort_client(self, proxy_status: str) -> None:
        """The response cannot be completed: reset the client connection."""
        self.detach_upstream(abort=True)
        self.resp_done = True
        self.keep_alive = False
        conn = self.conn
        conn.closed = True
        conn.transport.abort()
        self.finish(self.status or 502, proxy_status)

    def client_gone(self) -> None:
        if self.resp_done:
            return
        self.dead = True
        self.detach_upstream(abort=True)
        self.resp_done = True
        self.finish(499, "")

    def finish(self, status: int, proxy_status: str) -> None:
        if self.logged:
            return
        self.logged = True
        conn = self.conn
        server = conn.server
        duration = monotonic() - self.t0
        route = self.route
        if proxy_status:  # the code of the ending: logged and counted as its RFC 9209 type
            ptype, reason = errors.LOGGED.get(proxy_status) or (proxy_status, None)
            if self.detail is not None:
                reason = self.detail
        else:
            ptype, reason = "", None
        stats = route.stats if route is not None else server.metrics.no_route
        stats.observe(status, ptype, duration, self.first_byte,
                      self.head_size + self.body_in, self.bytes_out)
        t = self.target
        if _diag.tailing:
            _diag.tail(self, status, proxy_status, duration)
        if self.cap is not None:
            _diag.capture_done(self, status, proxy_status, duration)
        server.log.write(
            route.log_prefix if route is not None else server.no_route_prefix,
            self.method.decode("latin-1"), self.host_s, self.path_b.decode("latin-1"),
            status, ptype, reason, t.addr if t is not None else None, self.upstream_status,
            duration, self.connect_time, self.first_byte, self.head_size + self.body_in,
            self.bytes_out, conn.client_ip, (self.rid or b"").decode("latin-1"), self.retries,
            conn.tls_log)
