"""Upstream connections: connect (DNS, address policy, timeout) and keep-alive pooling.

A ``HostPool`` per (host, port) keeps idle keep-alive connections (LIFO, bounded,
closed when idle too long). Pools live in ``Upstreams``, which outlives config
applies, so a new snapshot keeps the warm connections of unchanged targets.
An ``UpstreamConnection`` parses responses with httptools and hands the events to the
exchange currently using it (see forwarder.Exchange). Once the head of a response with a
Content-Length is parsed, the rest of its body bypasses the parser: each read is handed
on as it came (llhttp's body callback would copy every byte into a new object).
"""
from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
import time
from typing import Any, Iterable
from urllib.parse import urlsplit

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

IDLE_SECONDS = 20.0   # below common upstream keep-alive timeouts (nginx 75 s, aiohttp 75 s)
MAX_IDLE_PER_TARGET = 256


class UpstreamError(Exception):
    """A connect failure; ``code`` is an errors.ERRORS key."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@functools.lru_cache(maxsize=256)
def _networks(allowed: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(n, strict=False) for n in allowed)


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr


def is_local_address(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Is ``addr`` an address of this host (what a wildcard listener accepts on)?
    Only a local address can be bound."""
    with socket.socket(socket.AF_INET6 if addr.version == 6 else socket.AF_INET) as probe_sock:
        try:
            probe_sock.bind((str(addr), 0))
        except OSError:
            return False
    return True


def _endpoint(text: str) -> tuple[str, int] | None:
    """``host:port``, ``[v6]:port`` or a ws/wss/http/https URL → (host, port); None when
    it names no port (e.g. an HTTPS listener that is ``off``)."""
    if "://" in text:
        url = urlsplit(text)
        default = 443 if url.scheme in ("wss", "https") else 80
        return (url.hostname, url.port or default) if url.hostname else None
    host, _, port = text.rpartition(":")
    return (host.strip("[]") or "0.0.0.0", int(port)) if port.isdigit() else None


class ReservedEndpoints:
    """Addresses no restricted (tenant) pool may reach, whatever its allowed_networks
    (the proxy and the control plane are never targets). A listener on a
    wildcard address (0.0.0.0, ::) reserves its port on every address of this host."""

    def __init__(self) -> None:
        self.exact: frozenset[tuple[Any, int]] = frozenset()
        self.local_ports: frozenset[int] = frozenset()

    def reserve(self, endpoints: Iterable[str]) -> None:
        """Add ``host:port`` listeners or URLs; names are resolved now."""
        exact, local = set(self.exact), set(self.local_ports)
        for host, port in filter(None, map(_endpoint, endpoints)):
            for ip in _resolve_now(host):
                if ip.is_unspecified:
                    local.add(port)
                else:
                    exact.add((ip, port))
        self.exact, self.local_ports = frozenset(exact), frozenset(local)

    def forbids(self, ip: str, port: int) -> bool:
        addr = _address(ip)
        return (addr, port) in self.exact or (port in self.local_ports and is_local_address(addr))


def _resolve_now(host: str) -> set:
    try:
        return {_address(host)}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError):
        return set()
    return {_address(info[4][0]) for info in infos}


# This node's listeners and its control plane, filled in once at start (node.py).
RESERVED = ReservedEndpoints()


def check_address(ip: str, port: int, policy: Any) -> bool:
    """May a pool with ``policy`` (schema.UpstreamPolicy) connect to ``ip``:``port``?"""
    if policy is None or not policy.restricted:
        return True
    if RESERVED.forbids(ip, port):
        return False
    addr = _address(ip)
    for net in _networks(policy.allowed_networks):
        if addr.version == net.version and addr in net:
            return True
    return not (addr.is_loopback or addr.is_private or addr.is_link_local or addr.is_unspecified
                or addr.is_multicast or addr.is_reserved)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("transport", "hostpool", "parser", "exchange", "idle_since", "closed",
                 "reused", "received", "reason", "headers", "head_request", "finish_after_feed",
                 "peer", "body_left", "bypass", "keep")

    def __init__(self, hostpool: "HostPool"):
        self.transport = None
        self.hostpool = hostpool
        self.parser = HttpResponseParser(self)
        self.exchange = None
        self.idle_since = 0.0
        self.closed = False
        self.reused = False
        self.received = False
        self.reason = b""
        self.headers: list = []
        self.head_request = False
        self.finish_after_feed = False
        self.peer = ""
        self.body_left = 0    # bytes of a Content-Length body not yet received
        self.bypass = False   # the rest of that body skips the parser
        self.keep = False     # keep-alive verdict of the response being bypassed

    # ---- transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else ""

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:  # unsolicited bytes on an idle connection
            self.close()
            return
        if self.bypass:
            return self.body_received(ex, data)
        self.received = True
        ex.up_last = time.monotonic()
        try:
            self.parser.feed_data(data)
        except HttpParserError:
            if self.exchange is ex:
                ex.flush()
                ex.upstream_failed(self, "http_protocol_error")
            return
        except HttpParserUpgrade as upg:  # a 101 the exchange accepted (WebSocket)
            if self.exchange is ex and ex.status == 101:
                off = upg.args[0] if upg.args and isinstance(upg.args[0], int) else len(data)
                ex.upstream_upgraded(self, data[off:])
            else:
                if self.exchange is ex:
                    ex.upstream_failed(self, "http_protocol_error")
                else:
                    self.abort()
            return
        if ex.out is not None:
            ex.flush()
        if self.body_left > 0 and self.exchange is ex:
            self.keep = self.parser.should_keep_alive()
            self.bypass = True
        if self.finish_after_feed:  # a HEAD response: llhttp would wait for the body
            self.finish_after_feed = False
            keep = self.parser.should_keep_alive()
            self.parser = HttpResponseParser(self)
            if self.exchange is ex:
                ex.upstream_done(self, keep)

    def body_received(self, ex: Any, data: bytes) -> None:
        """A read inside a Content-Length body, relayed without parsing."""
        ex.up_last = time.monotonic()
        left = self.body_left
        n = len(data)
        if n < left:
            self.body_left = left - n
            ex.upstream_body(data)
            return
        self.body_left = 0
        self.bypass = False
        self.parser = HttpResponseParser(self)
        keep = self.keep
        if n > left:  # bytes after the response, with no request outstanding
            data = data[:left]
            keep = False
        ex.upstream_body(data)
        if self.exchange is ex:
            ex.upstream_done(self, keep)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        idle = self.hostpool.idle
        if self.exchange is None:
            if self in idle:
                idle.remove(self)
            return
        self.exchange.upstream_lost(self)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.pause_client(True)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.pause_client(False)

    # ---- httptools callbacks
    def on_message_begin(self) -> None:
        self.headers = []
        self.reason = b""

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self.exchange.upstream_head(self, status, self.reason, self.headers)
        if self.head_request and status >= 200:
            self.finish_after_feed = True

    def on_body(self, chunk: bytes) -> None:
        if self.body_left:
            self.body_left -= len(chunk)
        self.exchange.upstream_body(chunk)

    def on_message_complete(self) -> None:
        self.body_left = 0
        if not self.finish_after_feed:
            self.exchange.upstream_done(self, self.parser.should_keep_alive())

    # ---- pool side
    def close(self) -> None:
        self.closed = True
        self.exchange = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.exchange = None
        if self.transport is not None:
            self.transport.abort()


class HostPool:
    """Idle keep-alive connections to one (host, port), over TLS when ``ssl`` is set
    (a client context built at apply time; ``server_hostname`` is the SNI and the name
    verified)."""

    __slots__ = ("host", "port", "idle", "literal", "ssl", "server_hostname", "retired")

    def __init__(self, host: str, port: int, ssl_context: Any = None,
                 server_hostname: str | None = None):
        self.host = host
        self.port = port
        self.idle: list[UpstreamConnection] = []
        self.literal = is_ip(host)
        self.ssl = ssl_context
        self.server_hostname = server_hostname if ssl_context is not None else None
        self.retired = False  # no target of the running config uses it any more

    def acquire(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            c = idle.pop()
            if not c.closed and not c.transport.is_closing():
                c.reused = True
                c.received = False
                return c
        return None

    def release(self, c: UpstreamConnection) -> None:
        c.exchange = None
        if c.closed or self.retired or len(self.idle) >= MAX_IDLE_PER_TARGET:
            c.close()
            return
        c.idle_since = time.monotonic()
        self.idle.append(c)

    def sweep(self, now: float, max_idle: float = IDLE_SECONDS) -> None:
        idle = self.idle
        while idle and now - idle[0].idle_since > max_idle:
            idle.pop(0).close()

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()

    async def connect(self, timeout: float, policy: Any) -> UpstreamConnection:
        """A new connection, or UpstreamError with the Proxy-Status code of the failure."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self.literal:
            addrs = [self.host]
        else:
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM), timeout)
            except (socket.gaierror, UnicodeError) as exc:
                raise UpstreamError("dns_error", f"{self.host}: {exc}") from None
            except asyncio.TimeoutError:
                raise UpstreamError("dns_error", f"{self.host}: lookup timed out") from None
            addrs = list(dict.fromkeys(info[4][0] for info in infos))
        allowed = [a for a in addrs if check_address(a, self.port, policy)]
        if not allowed:
            raise UpstreamError("destination_ip_prohibited", f"{self.host} -> {', '.join(addrs)}")
        error = UpstreamError("connection_refused", self.host)
        for addr in allowed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise UpstreamError("connection_timeout", f"{addr}:{self.port}")
            try:
                if self.ssl is None:
                    _, conn = await asyncio.wait_for(
                        loop.create_connection(lambda: UpstreamConnection(self), addr, self.port),
                        remaining)
                else:
                    _, conn = await asyncio.wait_for(
                        loop.create_connection(
                            lambda: UpstreamConnection(self), addr, self.port, ssl=self.ssl,
                            server_hostname=self.server_hostname,
                            ssl_handshake_timeout=max(remaining, 0.01)),
                        remaining)
                return conn
            except asyncio.TimeoutError:
                raise UpstreamError("connection_timeout", f"{addr}:{self.port}") from None
            except ssl.SSLCertVerificationError as exc:
                raise UpstreamError("tls_certificate_error",
                                    f"{addr}:{self.port}: {exc.verify_message}") from None
            except ssl.SSLError as exc:
                raise UpstreamError("tls_protocol_error", f"{addr}:{self.port}: {exc}") from None
            except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
                if self.ssl is None:
                    error = UpstreamError("destination_ip_unroutable",
                                          f"{addr}:{self.port}: {exc}")
                    continue
                # the peer hung up during the handshake: not a TLS server
                raise UpstreamError("tls_protocol_error", f"{addr}:{self.port}: {exc}") from None
            except ConnectionRefusedError:
                error = UpstreamError("connection_refused", f"{addr}:{self.port}")
            except OSError as exc:
                error = UpstreamError("destination_ip_unroutable", f"{addr}:{self.port}: {exc}")
        raise error


class Upstreams:
    """All host pools of a node process; survives config applies."""

    def __init__(self) -> None:
        self.pools: dict[tuple[str, int], HostPool] = {}

    def get(self, host: str, port: int, ssl_context: Any = None,
            server_hostname: str | None = None, tls_key: Any = None) -> HostPool:
        """The pool of (host, port); TLS connections are pooled apart from plain ones
        and per TLS settings (``tls_key``: anything hashable naming them)."""
        key = (host, port) if ssl_context is None else (host, port, server_hostname, tls_key)
        hp = self.pools.get(key)
        if hp is None:
            hp = self.pools[key] = HostPool(host, port, ssl_context, server_hostname)
        elif ssl_context is not None:
            hp.ssl = ssl_context
        return hp

    def retire_unused(self, used: set) -> None:
        """After an apply: close and forget the pools of addresses no target uses any more
        (``used``: the pools the new tables hold). Requests still running on one finish
        normally; their connections are closed instead of kept."""
        for key, hp in list(self.pools.items()):
            if hp not in used:
                hp.retired = True
                hp.close()
                del self.pools[key]

    def sweep(self) -> None:
        now = time.monotonic()
        for hp in self.pools.values():
            if hp.idle:
                hp.sweep(now)

    def close(self) -> None:
        for hp in self.pools.values():
            hp.close()
