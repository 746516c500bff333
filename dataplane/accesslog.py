"""Access log: one JSON object per line, built with a few string joins (no dict, no
json.dumps per request), buffered and flushed periodically or when the buffer fills."""
from __future__ import annotations

import os
import sys
import time
from json.encoder import encode_basestring as _q  # C implementation: '"escaped"'

FLUSH_BYTES = 64 * 1024
NO_TLS = '"tls_version":null,"sni":null'  # the tls fragment of a plain-HTTP line


def q(value: str | None) -> str:
    return "null" if value is None else _q(value)


def route_prefix(node: str, route: str | None, tenant: str | None) -> str:
    """The constant part of a route's lines, built at apply time."""
    return f'"node":{q(node)},"route":{q(route)},"tenant":{q(tenant)},'


class _Clock:
    """ISO-8601 UTC with milliseconds; the seconds part is formatted once a second and
    the whole stamp once a millisecond (requests finishing in the same one share it)."""

    __slots__ = ("sec", "text", "ms", "stamp")

    def __init__(self) -> None:
        self.sec = -1
        self.text = ""
        self.ms = -1
        self.stamp = ""

    def now(self) -> str:
        ms = int(time.time() * 1000)
        if ms == self.ms:
            return self.stamp
        self.ms = ms
        sec = ms // 1000
        if sec != self.sec:
            self.sec = sec
            self.text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        self.stamp = f"{self.text}.{ms % 1000:03d}Z"
        return self.stamp


class AccessLog:
    def __init__(self, target: str = "-", node: str = ""):
        self.node = node
        self.pid = os.getpid()  # which worker process served the request (--workers N)
        self.clock = _Clock()
        self.buf: list[str] = []
        self.size = 0
        self.enabled = target != "off"
        if target in ("-", "", "off"):
            self.fd = sys.stdout.fileno()
            self.own = False
        else:
            self.fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            self.own = True

    def write(self, prefix: str, method: str, host: str, path: str, status: int,
              proxy_status: str, reason: str | None, upstream_addr: str | None,
              upstream_status: int | None,
              duration: float, connect: float | None, first_byte: float | None,
              bytes_in: int, bytes_out: int, client: str, request_id: str, retries: int,
              tls: str = NO_TLS) -> None:
        """``proxy_status``: the RFC 9209 error type ("" when none); ``reason``: a finer
        reason for it, or None. ``tls``: the '"tls_version":...,"sni":...' fragment,
        built once per connection."""
        if not self.enabled:
            return
        line = (
            f'{{"time":"{self.clock.now()}","pid":{self.pid},{prefix}"method":{_q(method)},"host":{_q(host)},'
            f'"path":{_q(path)},"status":{status},"proxy_status":{q(proxy_status or None)},'
            f'"reason":{q(reason)},'
            f'"upstream_addr":{q(upstream_addr)},"upstream_status":{_num(upstream_status)},'
            f'"duration":{duration:.6f},"upstream_connect_time":{_num(connect)},'
            f'"upstream_first_byte_time":{_num(first_byte)},"bytes_in":{bytes_in},'
            f'"bytes_out":{bytes_out},"client_addr":{_q(client)},"request_id":{_q(request_id)},'
            f'"retries":{retries},{tls}}}\n'
        )
        self.buf.append(line)
        self.size += len(line)
        if self.size >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        data = "".join(self.buf).encode("utf-8", "surrogateescape")
        self.buf.clear()
        self.size = 0
        try:
            while data:
                n = os.write(self.fd, data)
                data = data[n:]
        except BlockingIOError:
            pass  # a non-blocking stdout that is full: drop rather than stall the proxy
        except OSError:
            pass

    def close(self) -> None:
        self.flush()
        if self.own:
            os.close(self.fd)


def _num(v: float | int | None) -> str:
    if v is None:
        return "null"
    return str(v) if isinstance(v, int) else f"{v:.6f}"
