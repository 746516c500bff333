"""Real loopback servers and clients for data-plane tests (no mocks of our parts)."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

import httptools

from dataplane.accesslog import AccessLog
from dataplane.applier import NodeState
from dataplane.forwarder import ProxyServer
from tests.support import wait_until_async as wait_for  # noqa: F401 - the data-plane tests import it from here

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- snapshots

def pool(pid: int, targets: list[tuple], **kw) -> dict:
    """targets: (id, host, port) or (id, host, port, weight)."""
    ts = [{"id": t[0], "host": t[1], "port": t[2], "weight": t[3] if len(t) > 3 else 1}
          for t in targets]
    return {"id": pid, "name": f"pool{pid}", "tenant": None, "targets": ts, **kw}


def route(rid: int, hosts: list[str], pool_id: int, **kw) -> dict:
    return {"id": rid, "name": kw.pop("name", f"route{rid}"), "tenant": None, "hosts": hosts,
            "pool": pool_id, **kw}


def snapshot(pools: list[dict], routes: list[dict]) -> dict:
    return {"schema": 1, "pools": pools, "routes": routes, "certificates": []}


# ---------------------------------------------------------------- backend

@dataclass
class Request:
    method: bytes = b""
    url: bytes = b""
    headers: list = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    body_len: int = 0
    keep_body: bool = True

    def header(self, name: str) -> list[bytes]:
        n = name.lower().encode()
        return [v for k, v in self.headers if k.lower() == n]


Responder = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


def simple(body: bytes = b"ok", status: int = 200, extra: bytes = b"") -> Responder:
    async def respond(req: Request, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%b\r\n%b" % (status, len(body), extra, body))
    return respond


class Backend:
    """An HTTP/1.1 server on a loopback port whose response is a coroutine under test control."""

    def __init__(self, respond: Responder | None = None, keep_body: bool = True,
                 read_delay: float = 0.0, ssl=None):
        self.ssl = ssl  # a server SSLContext: an HTTPS backend
        self.respond = respond or simple()
        self.read_delay = read_delay
        self.keep_body = keep_body
        self.requests: list[Request] = []
        self.connections = 0
        self.server = None
        self.port = 0

    async def start(self) -> "Backend":
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0, ssl=self.ssl)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.server.close()

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        done: asyncio.Queue = asyncio.Queue()
        backend = self

        class P:
            def on_message_begin(self):
                self.req = Request(keep_body=backend.keep_body)

            def on_url(self, url):
                self.req.url += url

            def on_header(self, k, v):
                self.req.headers.append((k, v))

            def on_body(self, b):
                self.req.body_len += len(b)
                if self.req.keep_body:
                    self.req.body += b

            def on_message_complete(self):
                self.req.method = parser.get_method()
                done.put_nowait(self.req)

        parser = httptools.HttpRequestParser(P())
        try:
            while True:
                while done.empty():
                    data = await r.read(65536)
                    if not data:
                        return
                    parser.feed_data(data)
                    if self.read_delay:
                        await asyncio.sleep(self.read_delay)  # a slow reader
                req = done.get_nowait()
                self.requests.append(req)
                await self.respond(req, w)
                await w.drain()
                if w.is_closing():
                    return
        except (ConnectionError, httptools.HttpParserError):
            pass
        finally:
            w.close()


# ---------------------------------------------------------------- in-process node

class Proxy:
    """A real ProxyServer listening on a loopback port in the test's event loop.
    ``https=True`` also starts an HTTPS listener (``tls_port``) choosing certificates by
    SNI from the applied snapshot; ``server_kw`` go to both ProxyServers."""

    def __init__(self, snap: dict, trusted: tuple = (), log_path: str = "off",
                 https: bool = False, default_certificate: str = "", **server_kw):
        self.state = NodeState(node_name="test", default_certificate=default_certificate)
        if snap is not None:
            self.state.apply(1, "h1", snap)
        self.log = AccessLog(log_path, "test")
        self.trusted = trusted
        self.https = https
        self.server_kw = server_kw
        self.tls_server = self.tls_listener = None
        self.tls_port = 0

    async def start(self) -> "Proxy":
        loop = asyncio.get_running_loop()
        tls_sock = None
        if self.https:
            tls_sock = socket.socket()
            tls_sock.bind(("127.0.0.1", 0))
            self.tls_port = tls_sock.getsockname()[1]
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        kw = dict(self.server_kw)
        if self.https:
            kw.setdefault("https_port", self.tls_port)
        self.server = ProxyServer(self.state, self.log, self.port, self.trusted, **kw)
        self.listener = await loop.create_server(self.server, sock=sock)
        if tls_sock is not None:
            from dataplane import tls
            kw.pop("https_port", None)
            self.tls_server = ProxyServer(self.state, self.log, self.tls_port, self.trusted,
                                          scheme=b"https", **kw)
            self.tls_listener = await loop.create_server(
                self.tls_server, sock=tls_sock, ssl=tls.listener_context(self.state),
                ssl_handshake_timeout=tls.HANDSHAKE_TIMEOUT)
        return self

    async def close(self) -> None:
        self.listener.close()
        for c in list(self.server.connections):
            c.transport.abort()
        if self.tls_listener is not None:
            self.tls_listener.close()
            for c in list(self.tls_server.connections):
                c.transport.abort()
        self.state.upstreams.close()
        self.log.flush()


# ---------------------------------------------------------------- client

@dataclass
class Response:
    status: int
    headers: list
    body: bytes

    def header(self, name: str) -> list[bytes]:
        n = name.lower().encode()
        return [v for k, v in self.headers if k.lower() == n]

    def one(self, name: str) -> str | None:
        v = self.header(name)
        return v[0].decode() if v else None


class Client:
    """A raw HTTP/1.1 client connection: send exact bytes, read parsed responses."""

    def __init__(self, port: int, ssl=None, server_hostname: str | None = None):
        self.port = port
        self.ssl = ssl  # a client SSLContext: talk TLS, with this SNI
        self.server_hostname = server_hostname

    async def connect(self) -> "Client":
        if self.ssl is None:
            self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)
        else:
            self.r, self.w = await asyncio.open_connection(
                "127.0.0.1", self.port, ssl=self.ssl, server_hostname=self.server_hostname)
        self.parser = None
        self.done: list[Response] = []
        self.head = False
        return self

    async def send(self, data: bytes) -> None:
        self.w.write(data)
        await self.w.drain()

    async def response(self, head: bool = False, timeout: float = 10.0) -> Response:
        """Read the next response; raises ConnectionError if the connection ends first."""
        if self.parser is None or head:
            self._new_parser()
        self.head = head
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.done:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError("no complete response in time")
            data = await asyncio.wait_for(self.r.read(65536), remaining)
            if not data:
                raise ConnectionError("connection closed before the response completed")
            self.parser.feed_data(data)
        res = self.done.pop(0)
        if head:
            self.parser = None
        return res

    def _new_parser(self) -> None:
        client = self

        class P:
            def on_message_begin(self):
                self.res = Response(0, [], b"")
                self.body = bytearray()

            def on_header(self, k, v):
                self.res.headers.append((k, v))

            def on_headers_complete(self):
                self.res.status = client.parser.get_status_code()
                if client.head:
                    client.done.append(self.res)

            def on_body(self, b):
                self.body += b

            def on_message_complete(self):
                if not client.head:
                    self.res.body = bytes(self.body)
                    client.done.append(self.res)

        self.parser = httptools.HttpResponseParser(P())

    async def request(self, method: str = "GET", path: str = "/", host: str = "app.test",
                      headers: list[tuple[str, str]] = (), body: bytes = b"") -> Response:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return await self.response(head=method == "HEAD")

    async def closed(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the connection (EOF or reset)."""
        try:
            while True:
                data = await asyncio.wait_for(self.r.read(65536), timeout)
                if not data:
                    return True
        except ConnectionError:
            return True

    def close(self) -> None:
        self.w.close()


async def get(port: int, **kw) -> Response:
    c = await Client(port).connect()
    try:
        return await c.request(**kw)
    finally:
        c.close()


# ---------------------------------------------------------------- node subprocess

class NodeProcess:
    """`python -m dataplane --snapshot FILE` on loopback ports chosen by the OS."""

    def __init__(self, tmp: Path, snap: dict, *extra: str):
        self.tmp = tmp
        path = tmp / "snapshot.json"
        path.write_text(json.dumps(snap))
        # append mode: the node shares this file description, so a seek(0) here to read
        # must not move where the node writes (O_APPEND always writes at the end)
        self.err = open(tmp / "node.err", "a+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dataplane", "--snapshot", str(path), "--http", "127.0.0.1:0",
             "--https", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--access-log", str(tmp / "access.log"), "--name", "t",
             *extra],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.err, env={**os.environ})
        self.port = self.admin_port = self.https_port = 0

    async def ready(self, timeout: float = 15.0) -> "NodeProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.err.seek(0)
            for line in self.err.read().splitlines():
                if " listening http=" in line:
                    parts = dict(p.split("=", 1) for p in line.split() if "=" in p)
                    self.port = int(parts["http"].rsplit(":", 1)[1])
                    self.admin_port = int(parts["admin"].rsplit(":", 1)[1])
                    if "https" in parts:
                        self.https_port = int(parts["https"].rsplit(":", 1)[1])
                    return self
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited: {self.stderr()}")
            await asyncio.sleep(0.05)
        raise AssertionError(f"node not ready: {self.stderr()}")

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()

    def rss_kb(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()
        return self.proc.returncode


_REFUSING: list[socket.socket] = []


def refused_port() -> int:
    """A loopback port where connections are refused, for the life of the test process.

    The socket stays bound but never listens: a port that was merely closed could be
    handed by the kernel to the next listener (even the proxy under test, which then
    answers 508 loop instead of 502 refused).
    """
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _REFUSING.append(s)
    return s.getsockname()[1]
