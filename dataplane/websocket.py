"""WebSocket tunnel: after a 101, the client and upstream connections relay raw bytes.

The forwarder relays the upgrade request and the 101; then ``Tunnel`` swaps both
transports' protocols for two ``_Side`` protocols that write what one side reads to
the other. Frames, pings and close codes pass through untouched since bytes are
relayed as they are. Backpressure: when one side's write buffer fills, the other
side stops reading until it drains. One timer per tunnel closes it after
``ws_idle_timeout`` seconds without bytes either way. Client-to-upstream frames are
length-checked by ``FrameGuard`` (headers only, payloads are skipped, not copied):
a message (all fragments) over ``ws_max_message`` closes the tunnel.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

monotonic = time.monotonic


class FrameGuard:
    """Follows RFC 6455 frame headers in one direction and sums data-frame payload
    lengths per message. ``feed`` returns False once a message exceeds ``limit``."""

    __slots__ = ("limit", "skip", "hdr", "msg")

    def __init__(self, limit: int):
        self.limit = limit
        self.skip = 0      # payload bytes of the current frame still to pass
        self.hdr = b""     # a frame header split across reads
        self.msg = 0       # payload bytes of the current message so far

    def feed(self, data: bytes) -> bool:
        if self.msg > self.limit:  # already over: stays over
            return False
        i = 0
        n = len(data)
        while i < n:
            if self.skip:
                left = n - i
                if self.skip >= left:
                    self.skip -= left
                    return True
                i += self.skip
                self.skip = 0
                continue
            base = len(self.hdr)
            buf = self.hdr + data[i:i + 14] if base else data[i:i + 14]
            if len(buf) < 2:
                self.hdr = bytes(buf)
                return True
            b1 = buf[1]
            length = b1 & 0x7F
            size = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if b1 & 0x80 else 0)
            if len(buf) < size:  # only possible when the rest of ``data`` is in buf
                self.hdr = bytes(buf)
                return True
            if length == 126:
                length = int.from_bytes(buf[2:4], "big")
            elif length == 127:
                length = int.from_bytes(buf[2:10], "big")
            i += size - base
            self.hdr = b""
            b0 = buf[0]
            if b0 & 0x0F < 8:  # data frame (text, binary, continuation); control frames are tiny
                self.msg += length
                if self.msg > self.limit:
                    return False
                if b0 & 0x80:  # FIN
                    self.msg = 0
            self.skip = length
        return True


class _Side(asyncio.Protocol):
    """The protocol of one of the two connections once tunnelled."""

    __slots__ = ("tunnel", "transport", "peer", "eof", "count", "guard", "write_paused")

    def __init__(self, tunnel: "Tunnel", transport: Any, guard: FrameGuard | None):
        self.tunnel = tunnel
        self.transport = transport
        self.peer: _Side | None = None
        self.eof = False
        self.count = 0
        self.guard = guard
        self.write_paused = False

    def data_received(self, data: bytes) -> None:
        t = self.tunnel
        if t.closed:
            return
        t.last = monotonic()
        self.count += len(data)
        guard = self.guard
        if guard is not None and not guard.feed(data):
            t.close("http_request_error")  # a message over the size limit
            return
        self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if (not peer.eof and not self.tunnel.closed and peer.transport.can_write_eof()
                and self.transport.can_write_eof()):  # TLS transports cannot stay half-open
            peer.transport.write_eof()  # half-close; the tunnel ends when both are done
            return True
        self.tunnel.close("")
        return False

    def pause_writing(self) -> None:
        self.write_paused = True
        self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.tunnel.closed:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.close("")


class Tunnel:
    """Relays bytes between a client connection and an upstream connection after a 101.
    The client connection hands itself over by calling ``start``."""

    __slots__ = ("ex", "conn", "client", "upstream", "up_rest", "last", "idle", "timer",
                 "closed")

    def __init__(self, ex: Any, upstream_conn: Any, rest: bytes):
        conn = ex.conn
        server = conn.server
        self.ex = ex
        self.conn = conn
        self.closed = False
        self.timer = None
        self.last = monotonic()
        self.idle = server.ws_idle_timeout
        self.up_rest = rest  # upstream bytes read after the 101
        # the upstream connection is never pooled again
        upstream_conn.closed = True
        upstream_conn.exchange = None
        limit = server.ws_max_message
        client = self.client = _Side(self, conn.transport, FrameGuard(limit) if limit else None)
        up = self.upstream = _Side(self, upstream_conn.transport, None)
        client.peer = up
        up.peer = client

    def start(self, client_full: bool, upstream_full: bool) -> None:
        """Take both transports over. Flow control carries over: ``client_full`` /
        ``upstream_full`` say whose write buffer is full, which keeps the other paused."""
        client, up = self.client, self.upstream
        client.write_paused = client_full
        up.write_paused = upstream_full
        client.transport.set_protocol(client)
        up.transport.set_protocol(up)
        ex = self.ex
        if ex.early:
            early, ex.early = ex.early, b""
            client.data_received(early)
        rest, self.up_rest = self.up_rest, b""
        if rest and not self.closed:
            up.data_received(rest)
        if self.closed:
            return
        for side in (client, up):  # a side reads while its peer can take more
            if side.peer.write_paused:
                side.transport.pause_reading()
            else:
                side.transport.resume_reading()
        self.timer = asyncio.get_running_loop().call_later(self.idle, self.on_timer)

    def on_timer(self) -> None:
        self.timer = None
        if self.closed:
            return
        idle = monotonic() - self.last
        if idle >= self.idle:
            self.close("connection_read_timeout")
        else:
            self.timer = asyncio.get_running_loop().call_later(self.idle - idle + 0.001,
                                                               self.on_timer)

    def close(self, proxy_status: str = "") -> None:
        """End both connections (buffered bytes are flushed first) and log the exchange."""
        if self.closed:
            return
        self.closed = True
        timer = self.timer
        if timer is not None:
            timer.cancel()
            self.timer = None
        self.client.transport.close()
        self.upstream.transport.close()
        ex = self.ex
        ex.body_in += self.client.count
        ex.bytes_out += self.upstream.count
        ex.detach_upstream()
        ex.finish(101, proxy_status)
        self.conn.connection_lost(None)  # the client connection's accounting
