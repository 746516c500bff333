"""Forward auth: before a route forwards a request, the node asks an auth service.

A GET to the route's auth URL carries ``X-Forwarded-Method``, ``-Proto``, ``-Host``,
``-Uri`` and ``-For``, the client's ``Cookie`` and ``Authorization``, the request id and
``Via`` (an auth URL leading back through this proxy is refused as a loop); no body.
A 2xx lets the request through, with the response headers the route names copied into
the upstream request (the client's own copies of those names are always dropped:
``ForwardAuth.req_drop``). Any other final status is the client's answer as the auth
service gave it (status, headers such as ``Location`` and ``Set-Cookie``, a body of up
to ``MAX_BODY`` bytes), logged as ``forward_auth_denied``. When the service cannot be
asked (timeout, refused, invalid answer ...) the client gets a 503 whose Proxy-Status
names the failure with ``details="forward auth"``: the request is never forwarded then.

Everything fixed is built at apply time (``ForwardAuth``: the request line and Host,
the lower-case names to copy, the connection pool). The subrequest is callback driven
like the forwarder: ``AuthCall`` is what ``upstream.UpstreamConnection`` reports to, on
pooled keep-alive connections whose connects obey the route owner's upstream policy
(``upstream.check_address``: a tenant's auth URL never reaches the control plane, the
node's own listeners or a forbidden network). Reading from the client pauses while the
subrequest runs (``P_AUTH``); body bytes already read wait in the exchange's pending
buffer and go upstream after the head, as they do while an upstream connects.
"""
from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

from httptools import HttpParserError

from dataplane import errors, schema, wire
from dataplane.forwarder import P_AUTH, P_BUFFER, _diag_head
from dataplane.headers import VIA
from dataplane.upstream import UpstreamError

MAX_BODY = 64 * 1024  # of a refusal relayed to the client; a longer body is cut there
# not relayed from a refusal: hop-by-hop, framing (the proxy frames), the proxy's own
RELAY_DROP = frozenset((
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"proxy-authenticate", b"proxy-authorization", b"content-length",
    b"x-request-id", b"proxy-status"))
FORWARDED_CREDENTIALS = (b"cookie", b"authorization")
FAILURES = frozenset(code[len("forward_auth_"):] for code in errors.ERRORS
                     if code.startswith("forward_auth_"))


class ForwardAuth:
    """One route's forward auth as the hot path uses it (built once per apply)."""

    __slots__ = ("url", "hostpool", "policy", "timeout", "prefix", "copy", "req_drop")

    def __init__(self, fa: schema.ForwardAuth, route_req_drop: frozenset, upstreams: Any,
                 tls_cache: Any):
        scheme, host, port, target = schema.forward_auth_url(fa.url)
        self.url = fa.url
        self.timeout = fa.timeout
        self.policy = fa.policy
        if scheme == "https":  # verified against the system CAs, SNI the URL's host
            ctx = tls_cache.client_context(True, "")
            self.hostpool = upstreams.get(host, port, ctx, host, (True, ""))
        else:
            self.hostpool = upstreams.get(host, port)
        authority = f"[{host}]" if ":" in host else host
        if port != (443 if scheme == "https" else 80):
            authority += f":{port}"
        self.prefix = (b"GET " + wire.origin_form(target) + b" HTTP/1.1\r\nHost: "
                       + wire.host_header(authority) + b"\r\n")
        self.copy = {wire.header_name(n).lower(): n.encode("ascii") for n in fa.response_headers}
        self.req_drop = route_req_drop | frozenset(self.copy)

    def ask(self, ex: Any, url: bytes) -> None:
        """Called by ``Exchange.forward``: pause the client, ask, resume (or answer)."""
        ex.conn.pause(P_AUTH)
        AuthCall(self, ex, url).start()

    def request(self, ex: Any, url: bytes) -> bytes:
        conn = ex.conn
        server = conn.server
        proto, xff = server.scheme, conn.client_b
        ident = ex.ident_in
        if conn.trusted and ident is not None:  # what a trusted proxy in front says (SPEC 4)
            proto = ident.get(b"x-forwarded-proto", proto).split(b",", 1)[0].strip() or proto
            prev = ident.get(b"x-forwarded-for")
            if prev:
                xff = prev + b", " + xff
        lines = [self.prefix, b"X-Forwarded-Method: ", ex.method, b"\r\nX-Forwarded-Proto: ", proto,
                 b"\r\nX-Forwarded-Host: ", ex.host_raw or b"", b"\r\nX-Forwarded-Uri: ", url,
                 b"\r\nX-Forwarded-For: ", xff, b"\r\nX-Request-ID: ", ex.rid,
                 # Via: an auth URL that leads back through this proxy is refused as a loop (508)
                 b"\r\nVia: ", ex.via + b", " + VIA if ex.via else VIA, b"\r\n"]
        for lname, name, value in ex.headers:
            if lname in FORWARDED_CREDENTIALS:
                lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)


class AuthCall:
    """One subrequest; the ``exchange`` of the ``UpstreamConnection`` it runs on."""

    __slots__ = ("fa", "ex", "url", "up", "timer", "task", "status", "fields", "body", "size",
                 "interim", "done", "retried", "up_last", "out")

    def __init__(self, fa: ForwardAuth, ex: Any, url: bytes):
        self.fa = fa
        self.ex = ex
        self.url = url
        self.up = self.timer = self.task = None
        self.status = 0
        self.fields: list = []
        self.body: list[bytes] = []
        self.size = 0
        self.interim = self.done = self.retried = False
        self.up_last = 0.0
        self.out = None  # UpstreamConnection flushes an exchange's gathered output: none here

    def start(self) -> None:
        self.timer = self.ex.conn.server.loop.call_later(self.fa.timeout, self.on_timeout)
        self.attempt()

    def attempt(self) -> None:
        c = self.fa.hostpool.acquire()
        if c is not None:
            self.send(c)
        else:
            self.task = asyncio.ensure_future(self.connect())

    async def connect(self) -> None:
        fa = self.fa
        try:
            c = await fa.hostpool.connect(fa.timeout, fa.policy)
        except UpstreamError as e:
            self.task = None
            return self.fail(e.code)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - never leave a client hanging on a bug
            self.task = None
            return self.fail("proxy_internal_error")
        self.task = None
        if self.done:
            c.hostpool.release(c)
            return
        self.send(c)

    def send(self, c: Any) -> None:
        self.up = c
        c.exchange = self
        c.head_request = False
        c.transport.write(self.fa.request(self.ex, self.url))

    # ---- what UpstreamConnection reports
    def upstream_head(self, c: Any, status: int, reason: bytes, fields: list) -> None:
        if status < 200:  # 1xx: not the answer (a 101 then fails as a protocol error)
            self.interim = True
            return
        if status > 599:
            raise HttpParserError(f"status {status}")
        self.interim = False
        self.status = status
        self.fields = fields

    def upstream_body(self, chunk: bytes) -> None:
        if self.interim or 200 <= self.status < 300:
            return
        room = MAX_BODY - self.size
        if room > 0:
            self.body.append(chunk if len(chunk) <= room else chunk[:room])
            self.size += min(len(chunk), room)

    def upstream_done(self, c: Any, keep: bool) -> None:
        if self.interim:
            self.interim = False
            return
        self.up = None
        if keep and not self.done:
            c.hostpool.release(c)
        else:
            c.close()
        self.complete()

    def upstream_lost(self, c: Any) -> None:
        if self.done or self.up is not c:
            return
        self.up = None
        if self.status:  # a body delimited by the close: its end
            return self.complete()
        if c.reused and not c.received and not self.retried:  # a stale pooled connection
            self.retried = True
            return self.attempt()
        self.fail("connection_terminated")

    def upstream_failed(self, c: Any, code: str) -> None:
        self.up = None
        c.abort()
        self.fail("http_protocol_error")

    def upstream_upgraded(self, c: Any, rest: bytes) -> None:
        self.upstream_failed(c, "http_protocol_error")

    def flush(self) -> None:
        pass

    def pause_client(self, pause: bool) -> None:
        pass

    # ---- endings
    def on_timeout(self) -> None:
        self.timer = None
        if self.done:
            return
        if self.status:  # the answer came, its body did not end in time: use what came
            up, self.up = self.up, None
            if up is not None:
                up.abort()
            return self.complete()
        self.fail("connection_timeout" if self.up is None else "http_response_timeout")

    def _end(self) -> bool:
        """Stop the timer and the connect; True when the client still waits."""
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None:
            self.task.cancel()
            self.task = None
        ex = self.ex
        if ex.dead or ex.resp_done:
            return False
        ex.conn.unpause(P_AUTH)
        return True

    def fail(self, code: str) -> None:
        """The auth service could not be asked: 503, nothing forwarded."""
        if self.done:
            return
        up, self.up = self.up, None
        if up is not None:
            up.abort()
        if self._end():
            self.ex.fail(f"forward_auth_{code}" if code in FAILURES else "proxy_internal_error")

    def complete(self) -> None:
        if self.done or not self._end():
            return
        ex, status = self.ex, self.status
        if 200 <= status < 300:
            copy = self.fa.copy
            lines = []
            for name, value in self.fields:
                canonical = copy.get(name.lower())
                if canonical is not None:
                    lines += (canonical, b": ", value, b"\r\n")
            ex.auth_lines = b"".join(lines)
            try:
                ex.proceed(ex.route, self.url)
            except Exception:  # noqa: BLE001 - never leave a client hanging on a bug
                ex.fail("proxy_internal_error", force_close=True)
            return
        self.relay(ex, status)

    def relay(self, ex: Any, status: int) -> None:
        """The auth service's refusal as the client's answer (framed by the proxy)."""
        conn = ex.conn
        close = not ex.keep_alive or (ex.body_expected and not ex.req_complete)
        if close:
            ex.keep_alive = False
        drop = RELAY_DROP
        for name, value in self.fields:
            if name.lower() == b"connection":
                drop = drop.union(t.strip().lower() for t in value.split(b","))
        try:
            phrase = HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b"Unknown"
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, phrase)]
        for name, value in self.fields:
            if name.lower() not in drop:
                lines += (name, b": ", value, b"\r\n")
        body = b"".join(self.body)
        if status not in (204, 304):
            lines.append(b"Content-Length: %d\r\n" % len(body))
        else:
            body = b""
        lines += (b"X-Request-ID: ", ex.rid, b"\r\nConnection: close\r\n\r\n" if close else
                  b"\r\nConnection: keep-alive\r\n\r\n" if ex.http10 else b"\r\n\r\n")
        if ex.method != b"HEAD":
            lines.append(body)
        data = b"".join(lines)
        if ex.cap is not None:
            ex.cap["client_response"] = _diag_head(data)
        if not conn.closed:
            conn.transport.write(data)
        ex.bytes_out += len(data)
        ex.status = status
        ex.resp_started = ex.resp_done = True
        if ex.pending_size:  # the body held meanwhile is dropped: read on
            ex.pending_size = 0
            conn.unpause(P_BUFFER)
        ex.pending = []
        ex.finish(status, "forward_auth_denied")
        if ex.req_complete or close:
            conn.exchange_finished(ex)


def hostpools(router: Any) -> set:
    """The connection pools the forward auths of ``router``'s routes use (kept open
    across an apply like the pools of targets)."""
    used = set()
    for table in (*router.exact.values(), *router.wildcard.values()):
        for group in (*table.exact.values(), *table.prefix.values(), table.regex):
            for e in group:
                if e.forward_auth is not None:
                    used.add(e.forward_auth.hostpool)
    return used
