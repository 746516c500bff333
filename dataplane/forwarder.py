"""The hot path: client connections, request parsing and the exchange with an upstream.

``ClientConnection`` is the asyncio protocol of one client connection; it parses with
httptools (llhttp) and creates one ``Exchange`` per request. An exchange is started
only after the ``feed_data`` call that completed its headers returns, so a parse error
anywhere in that read means nothing was sent upstream. Bodies stream both ways with
transport pause/resume for backpressure; nothing is buffered whole.
"""
from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import re
import time
from typing import Any

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser, parse_url

from dataplane import errors
from dataplane.router import normalize_host
from dataplane.upstream import UpstreamConnection, UpstreamError

monotonic = time.monotonic

# ---- limits (SPEC 4 defaults)
MAX_URL = 8 * 1024
MAX_HEADER = 8 * 1024
MAX_HEADERS_TOTAL = 32 * 1024
MAX_HEADER_COUNT = 100
HEADER_TIMEOUT = 10.0
BODY_IDLE_TIMEOUT = 30.0
KEEPALIVE_TIMEOUT = 60.0
PENDING_LIMIT = 64 * 1024   # request bytes held while the upstream connects

VIA = b"1.1 switchyard"
VIA_NAME = b"switchyard"
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
_RID_PREFIX = os.urandom(5).hex().encode() + b"-"
_rid_counter = itertools.count(1)

# request header classes
H_HOP, H_HOST, H_CL, H_TE, H_CONN, H_IDENT, H_VIA, H_RID, H_EXPECT = range(9)
REQ_CLASS = {
    b"connection": H_CONN, b"keep-alive": H_HOP, b"proxy-connection": H_HOP, b"te": H_HOP,
    b"trailer": H_HOP, b"upgrade": H_HOP, b"proxy-authorization": H_HOP,
    b"proxy-authenticate": H_HOP, b"transfer-encoding": H_TE, b"host": H_HOST,
    b"content-length": H_CL, b"x-forwarded-for": H_IDENT, b"x-forwarded-proto": H_IDENT,
    b"x-forwarded-host": H_IDENT, b"x-forwarded-port": H_IDENT, b"x-real-ip": H_IDENT,
    b"forwarded": H_IDENT, b"via": H_VIA, b"x-request-id": H_RID, b"expect": H_EXPECT,
}
# response headers that never pass as they are
R_HOP, R_CL, R_TE, R_CONN, R_VIA = range(5)
RESP_CLASS = {
    b"connection": R_CONN, b"keep-alive": R_HOP, b"proxy-connection": R_HOP, b"te": R_HOP,
    b"trailer": R_HOP, b"upgrade": R_HOP, b"proxy-authorization": R_HOP,
    b"proxy-authenticate": R_HOP, b"transfer-encoding": R_TE, b"content-length": R_CL,
    b"via": R_VIA, b"x-request-id": R_HOP,
}
# response body framing towards the client
M_NONE, M_LENGTH, M_CHUNKED, M_CLOSE = range(4)
# reasons client reading is paused (bit mask)
P_UPSTREAM, P_BUFFER, P_PIPELINE = 1, 2, 4


class Reject(Exception):
    """Raised from a parser callback: answer with errors code ``code`` and close."""

    def __init__(self, code: str):
        self.code = code


def new_request_id() -> bytes:
    return _RID_PREFIX + b"%x" % next(_rid_counter)


def _tokens(value: bytes) -> list[bytes]:
    return [t.strip().lower() for t in value.split(b",") if t.strip()]


def _via_loops(via: bytes) -> bool:
    # Via: 1.1 switchyard, HTTP/1.1 other (comment) -> received-by is the second word
    for entry in via.split(b","):
        parts = entry.split()
        if len(parts) >= 2 and parts[1].lower() == VIA_NAME:
            return True
    return False


class ProxyServer:
    """What every client connection of one listener shares."""

    def __init__(self, state: Any, access_log: Any, port: int,
                 trusted_proxies: tuple = (), scheme: bytes = b"http"):
        self.state = state
        self.metrics = state.metrics
        self.log = access_log
        self.port = port
        self.port_b = str(port).encode()
        self.scheme = scheme
        self.trusted = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)
        self.connections: set[ClientConnection] = set()
        self.draining = False
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
                 "head_bytes", "idle_since", "head_started", "last_rx", "requests", "closed")

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

    # ---- transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        server = self.server
        server.connections.add(self)
        server.metrics.active_connections += 1
        peer = transport.get_extra_info("peername")
        ip = peer[0] if peer else "unknown"
        self.client_ip = ip
        self.client_b = ip.encode()
        self.trusted = server.is_trusted(ip)
        # identity headers for a peer whose own values are not trusted: fixed per connection
        self.ident = (b"X-Forwarded-For: " + self.client_b + b"\r\nX-Real-IP: " + self.client_b
                      + b"\r\nX-Forwarded-Proto: " + server.scheme
                      + b"\r\nX-Forwarded-Port: " + server.port_b + b"\r\n")
        now = monotonic()
        self.idle_since = self.head_started = self.last_rx = now

    def data_received(self, data: bytes) -> None:
        self.last_rx = monotonic()
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            # WebSocket proxying is a later issue: forward without Upgrade, then close.
            for ex in (self.cur, self.active, *self.queue):
                if ex is not None:
                    ex.keep_alive = False
            self.pause(P_PIPELINE)
        except HttpParserError as exc:
            code = exc.__context__.code if isinstance(exc.__context__, Reject) else "bad_request"
            self.reject(code)
            return
        if self.in_head and self.head_bytes > MAX_HEADERS_TOTAL + MAX_URL:
            self.reject("headers_too_large")
            return
        if self.active is None and self.queue:
            self.start_next()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        server = self.server
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
        self.requests += 1
        self.idle_since = monotonic()
        if not ex.keep_alive or self.server.draining and not self.queue:
            self.close()
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

    def reject(self, code: str) -> None:
        """A malformed request: answer if no response is under way, then close."""
        ex = self.active
        if ex is not None and ex.resp_started:
            ex.abort_client("http_request_error")
            return
        target = ex or self.cur
        if target is not None and not target.logged:
            target.keep_alive = False
            target.fail(code, force_close=True)
        else:
            self.transport.write(errors.render(code, new_request_id(), close=True))
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def check_deadlines(self, now: float) -> None:
        ex = self.active
        if ex is not None:
            if not ex.req_complete and now - self.last_rx > BODY_IDLE_TIMEOUT:
                ex.abort_client("http_request_error")
        elif self.in_head:
            if now - self.head_started > HEADER_TIMEOUT:
                self.close()
        elif not self.queue:
            limit = KEEPALIVE_TIMEOUT if self.requests else HEADER_TIMEOUT
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
        self.dead = False
        self.up_paused = False
        self.host_s = ""
        self.path_b = b""
        self.eof_body = False
        self.out = None  # response bytes gathered during one upstream read, one write
        self.keep_alive = False
        self.method = b""
        self.http10 = False

    # ---- request head
    def special(self, cls: int, lname: bytes, value: bytes) -> None:
        if cls == H_HOST:
            if self.host_raw is not None:
                raise Reject("bad_request")
            self.host_raw = value
        elif cls == H_CL:
            if self.clen is not None or not value.isdigit():
                raise Reject("bad_request")
            self.clen = value
        elif cls == H_TE:
            self.te = value if self.te is None else self.te + b", " + value
        elif cls == H_CONN:
            toks = _tokens(value)
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

    def check_head(self) -> None:
        """Framing and Host checks; raising Reject here means nothing went upstream."""
        if self.te is not None:
            if self.clen is not None or _tokens(self.te)[-1:] != [b"chunked"]:
                raise Reject("bad_request")
            self.chunked = self.body_expected = True
        elif self.clen is not None:
            self.body_expected = self.clen != b"0" and int(self.clen) > 0
        if self.host_raw is None and not self.http10:
            raise Reject("bad_request")
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
            self.abort_client("http_request_error")
        else:
            self.fail("body_too_large", force_close=True)

    # ---- routing and upstream selection
    def start(self) -> None:
        conn = self.conn
        url = self.url
        host_raw = self.host_raw
        if url[:1] != b"/":
            if url[:7].lower() == b"http://" or url[:8].lower() == b"https://":
                try:
                    u = parse_url(url)
                except HttpParserError:
                    return self.fail("bad_request")
                host_raw = (u.host or b"") + (b":%d" % u.port if u.port else b"")
                self.host_raw = host_raw
                url = (u.path or b"/") + (b"?" + u.query if u.query else b"")
            else:
                return self.fail("bad_request" if url != b"*" else "destination_not_found")
        q = url.find(b"?")
        path_b = url if q < 0 else url[:q]
        self.path_b = path_b
        host_s = self.host_s = normalize_host(host_raw or b"")
        if self.via is not None and _via_loops(self.via):
            return self.fail("proxy_loop_detected")
        route = conn.server.state.tables.router.match(
            host_s, path_b.decode("latin-1"), self.method, self.headers)
        if route is None:
            return self.fail("destination_not_found")
        self.route = route
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
        self.pool = route.pool
        self.attempt()

    def build_head(self, route: Any) -> bytes:
        conn = self.conn
        drop = route.req_drop
        if self.conn_tokens:
            drop = drop.union(self.conn_tokens)
        parts = []
        add = parts.append
        for lname, name, value in self.headers:
            if lname in REQ_CLASS or (drop and lname in drop):
                continue
            add(name + b": " + value + b"\r\n")
        if route.req_extra:
            add(route.req_extra)
        host = self.host_raw or b""
        ident = self.ident_in
        if ident is None or not conn.trusted:
            add(conn.ident)
            add(b"X-Forwarded-Host: " + host + b"\r\n")
            fwd = None
        else:
            if self.conn_tokens:
                ident = {k: v for k, v in ident.items() if k not in self.conn_tokens}
            xff = ident.get(b"x-forwarded-for")
            add(b"X-Forwarded-For: " + (xff + b", " + conn.client_b if xff else conn.client_b)
                + b"\r\nX-Real-IP: " + ident.get(b"x-real-ip", conn.client_b)
                + b"\r\nX-Forwarded-Proto: " + ident.get(b"x-forwarded-proto", conn.server.scheme)
                + b"\r\nX-Forwarded-Port: " + ident.get(b"x-forwarded-port", conn.server.port_b)
                + b"\r\nX-Forwarded-Host: " + ident.get(b"x-forwarded-host", host) + b"\r\n")
            fwd = ident.get(b"forwarded")
        if route.forwarded:
            ip = conn.client_ip
            node = f'"[{ip}]"' if ":" in ip else ip
            mine = f"for={node};proto={conn.server.scheme.decode()}".encode()
            if host:
                mine += b';host="' + host.replace(b'"', b"") + b'"'
            add(b"Forwarded: " + (fwd + b", " + mine if fwd else mine) + b"\r\n")
        elif fwd is not None:
            add(b"Forwarded: " + fwd + b"\r\n")
        add(b"Via: " + (self.via + b", " + VIA if self.via else VIA) + b"\r\nX-Request-ID: "
            + self.rid + b"\r\n")
        if self.chunked:
            add(b"Transfer-Encoding: chunked\r\n\r\n")
        elif self.clen is not None:
            add(b"Content-Length: " + self.clen + b"\r\n\r\n")
        else:
            add(b"\r\n")
        return b"".join(parts)

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
            if self.retries < pool.retries and self.method in IDEMPOTENT:
                self.retries += 1
                self.tried += (t,)
                return self.attempt()
            return self.fail(e.code)
        except Exception:  # never leave a client hanging on a bug
            if not self.dead:
                self.fail("proxy_internal_error", force_close=True)
            return
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
        self.timer = asyncio.get_running_loop().call_later(self.pool.read_timeout, self.on_timer)

    def on_timer(self) -> None:
        self.timer = None
        if self.resp_done or self.up is None:
            return
        rt = self.pool.read_timeout
        idle = monotonic() - self.up_last
        if idle < rt:
            self.timer = asyncio.get_running_loop().call_later(rt - idle + 0.001, self.on_timer)
            return
        if self.resp_started:
            self.abort_client("http_response_timeout")
        else:
            self.detach_upstream(abort=True)
            self.keep_alive = self.keep_alive and self.req_complete
            self.fail("http_response_timeout", force_close=not self.req_complete)

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
                      headers: list) -> None:
        if status < 200:
            if status == 101:
                raise HttpParserError("unexpected 101 Switching Protocols")
            self.interim = True  # 1xx: not relayed; Expect is answered by the proxy itself
            return
        self.interim = False
        self.first_byte = monotonic() - self.sent_at
        self.upstream_status = self.status = status
        route = self.route
        drop = route.resp_drop
        te = cl = via = None
        named = None
        kept = []
        for name, value in headers:
            lname = name.lower()
            cls = RESP_CLASS.get(lname)
            if cls is None:
                if not drop or lname not in drop:
                    kept.append((lname, name + b": " + value + b"\r\n"))
            elif cls == R_CL:
                cl = value
            elif cls == R_TE:
                te = value
            elif cls == R_CONN:
                named = _tokens(value) if named is None else named + _tokens(value)
            elif cls == R_VIA:
                via = value if via is None else via + b", " + value
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
        if mode == M_CLOSE:
            self.keep_alive = False
        parts = [b"HTTP/1.1 %d %b\r\n" % (status, reason)]
        if named:
            parts.extend(line for lname, line in kept if lname not in named)
        else:
            parts.extend(line for _, line in kept)
        if route.resp_extra:
            parts.append(route.resp_extra)
        if cl is not None and te is None and status != 204:
            parts.append(b"Content-Length: " + cl + b"\r\n")
        elif mode == M_CHUNKED:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        parts.append(b"Via: " + (via + b", " + VIA if via else VIA) + b"\r\nX-Request-ID: "
                     + self.rid + b"\r\n")
        if not self.keep_alive:
            parts.append(b"Connection: close\r\n\r\n")
        elif self.http10:
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        data = b"".join(parts)
        self.resp_started = True
        self.bytes_out += len(data)
        self.out = [data]

    def upstream_body(self, chunk: bytes) -> None:
        if self.interim:
            return
        if self.mode == M_CHUNKED:
            chunk = b"%x\r\n%b\r\n" % (len(chunk), chunk)
        self.bytes_out += len(chunk)
        if self.out is not None:
            self.out.append(chunk)
        else:
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
        if keep and self.req_complete:
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
            return self.abort_client("http_response_incomplete")
        self.detach_upstream()
        if (c.reused and not c.received and not self.stale_retry and not self.body_expected
                and self.method in IDEMPOTENT):
            # a pooled connection the upstream had closed: try once more on a new one
            self.stale_retry = True
            asyncio.ensure_future(self.connect(self.target))
            return
        self.fail("connection_terminated")

    def upstream_failed(self, c: UpstreamConnection, code: str) -> None:
        if self.resp_started:
            self.detach_upstream(abort=True)
            return self.abort_client("http_response_incomplete")
        self.detach_upstream(abort=True)
        self.fail(code, force_close=not self.req_complete)

    def pause_client(self, pause: bool) -> None:
        if pause:
            self.conn.pause(P_UPSTREAM)
        else:
            self.conn.unpause(P_UPSTREAM)

    # ---- endings
    def fail(self, code: str, force_close: bool = False) -> None:
        """Answer with a generated error response."""
        if self.resp_done:
            return
        if self.up is not None:
            self.detach_upstream(abort=True)
        conn = self.conn
        close = force_close or not self.keep_alive or (self.body_expected and not self.req_complete)
        if close:
            self.keep_alive = False
        rid = self.rid or new_request_id()
        data = errors.render(code, rid, close=close, http10=self.http10,
                             head=self.method == b"HEAD")
        if not conn.closed:
            conn.transport.write(data)
        self.bytes_out += len(data)
        self.resp_started = self.resp_done = True
        self.pending = []
        self.finish(errors.status_of(code), code)
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
        stats = route.stats if route is not None else server.metrics.no_route
        stats.observe(status, proxy_status, duration, self.first_byte)
        t = self.target
        server.log.write(
            route.log_prefix if route is not None else server.no_route_prefix,
            self.method.decode("latin-1"), self.host_s, self.path_b.decode("latin-1"),
            status, proxy_status, t.addr if t is not None else None, self.upstream_status,
            duration, self.connect_time, self.first_byte, self.head_size + self.body_in,
            self.bytes_out, conn.client_ip, (self.rid or b"").decode("latin-1"), self.retries)
