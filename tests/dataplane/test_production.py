"""Production behaviour: upstream safety (proxy environment,
no decompression, redirects relayed, DNS rebinding), lingering close, SIGTERM draining of
keep-alive connections and WebSockets (with and without workers), a config apply under
load, bounded metric labels and the connection gauge."""
from __future__ import annotations

import asyncio
import gzip
import json
import re
import signal
import socket

import aiohttp
import pytest

from dataplane import schema
from tests.dataplane.helpers import (Backend, Client, NodeProcess, Proxy, get, pool, route,
                                     snapshot, wait_for)
from tests.dataplane.helpers import refused_port
from tests.dataplane.test_errors import assert_error


@pytest.fixture
async def made():
    objs = []

    def keep(*xs):
        objs.extend(xs)
        return xs[0] if len(xs) == 1 else xs
    yield keep
    for o in reversed(objs):
        if isinstance(o, NodeProcess):
            o.stop()
        else:
            await o.close()


# ---------------------------------------------------------------- upstream safety

class Recorder:
    """A loopback listener that only counts connections (a would-be HTTP proxy)."""

    async def start(self) -> "Recorder":
        self.connections = 0

        async def conn(r, w):
            self.connections += 1
            w.close()
        self.server = await asyncio.start_server(conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.server.close()


async def test_proxy_environment_is_ignored(made, tmp_path, monkeypatch):
    """HTTP_PROXY and friends point at a recorder; the node connects to the target itself."""
    rec = made(await Recorder().start())
    b = made(await Backend().start())
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{rec.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    # a name, not an address: the case a proxy-aware client would send via the proxy
    snap = snapshot([pool(1, [(1, "localhost", b.port)])], [route(1, ["app.test"], 1)])
    node = made(await NodeProcess(tmp_path, snap).ready())
    for _ in range(3):
        res = await get(node.port, path="/via-env")
        assert res.status == 200 and res.body == b"ok"
    assert len(b.requests) == 3 and rec.connections == 0


async def test_response_is_passed_through_undecoded(made):
    payload = gzip.compress(b"hello " * 2000, mtime=0)

    async def respond(req, w):
        w.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\n\r\n%b" % (len(payload), payload))
    b = made(await Backend(respond).start())
    p = made(await Proxy(snapshot([pool(1, [(1, "127.0.0.1", b.port)])],
                                  [route(1, ["app.test"], 1)])).start())
    for accept in ("gzip", "identity"):
        res = await get(p.port, headers=[("Accept-Encoding", accept)])
        assert res.status == 200
        assert res.body == payload  # byte-identical: never decompressed nor re-encoded
        assert res.one("Content-Encoding") == "gzip"
        assert res.one("Content-Length") == str(len(payload))
    assert [r.header("Accept-Encoding") for r in b.requests] == [[b"gzip"], [b"identity"]]


async def test_upstream_redirect_is_relayed_not_followed(made):
    async def respond(req, w):
        if req.url == b"/old":
            w.write(b"HTTP/1.1 302 Found\r\nLocation: /new\r\nContent-Length: 0\r\n\r\n")
        else:
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnew")
    b = made(await Backend(respond).start())
    p = made(await Proxy(snapshot([pool(1, [(1, "127.0.0.1", b.port)])],
                                  [route(1, ["app.test"], 1)])).start())
    res = await get(p.port, path="/old")
    assert res.status == 302 and res.one("Location") == "/new" and res.body == b""
    assert [r.url for r in b.requests] == [b"/old"]


async def test_dns_rebinding_policy_checked_on_the_resolved_address(made):
    """A tenant (restricted) pool names 'localhost': the name passed validation, but it
    resolves to loopback, so the connect-time check refuses it; nothing reaches the target."""
    b = made(await Backend().start())
    snap = snapshot([pool(1, [(1, "localhost", b.port)], tenant="acme",
                          policy={"restricted": True}),
                     pool(2, [(2, "localhost", b.port)], tenant="acme",
                          policy={"restricted": True, "allowed_networks": ["127.0.0.0/8",
                                                                           "::1/128"]})],
                    [route(1, ["app.test"], 1, tenant="acme"),
                     route(2, ["ok.test"], 2, tenant="acme")])
    p = made(await Proxy(snap).start())
    res = await get(p.port)
    assert_error(res, 502, "destination_ip_prohibited")
    assert b.connections == 0
    # the same name with loopback explicitly allowed connects: the check is the policy
    assert (await get(p.port, host="ok.test")).status == 200
    assert b.connections == 1


# ---------------------------------------------------------------- lingering close

async def _upload_then_read(port: int, head: bytes, total: int) -> bytes:
    """Send a head and keep uploading (ignoring write errors), then read what came back."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(head)
    sent = 0
    piece = b"x" * 65536
    try:
        while sent < total:
            w.write(piece)
            sent += len(piece)
            await asyncio.wait_for(w.drain(), 2)
    except (ConnectionError, asyncio.TimeoutError):
        pass
    try:
        return await asyncio.wait_for(r.read(65536), 10)
    finally:
        w.close()


async def test_error_before_the_body_ended_reaches_the_client(made):
    """A 502 (refused target) or 413 sent while the client is still uploading must be
    read by the client, not destroyed by a reset (lingering close)."""
    b = made(await Backend().start())
    snap = snapshot([pool(1, [(1, "127.0.0.1", refused_port())]),
                     pool(2, [(2, "127.0.0.1", b.port)])],
                    [route(1, ["dead.test"], 1, max_body_size=0), route(2, ["small.test"], 2, max_body_size=1000)])
    p = made(await Proxy(snap).start())
    size = 8 * 1024 * 1024
    for _ in range(3):
        data = await _upload_then_read(
            p.port, b"POST /p HTTP/1.1\r\nHost: dead.test\r\nContent-Length: %d\r\n\r\n" % size,
            size)
        assert data.startswith(b"HTTP/1.1 502 ") and b"connection_refused" in data, data[:200]
        # streamed (chunked) upload over the route's limit: 413 while streaming
        data = await _upload_then_read(
            p.port, b"POST /p HTTP/1.1\r\nHost: small.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"10000\r\n", size)
        assert data.startswith(b"HTTP/1.1 413 "), data[:200]
    assert b.connections <= 3
    await wait_for(lambda: not p.server.connections, 10, "lingering connections closed")


# ---------------------------------------------------------------- SIGTERM drain

def _ws_snapshot(port: int) -> dict:
    return snapshot([pool(1, [(1, "127.0.0.1", port)])],
                    [route(1, ["app.test"], 1, websocket=True)])


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_drains_keepalive_connections_and_websockets(made, tmp_path, workers):
    from aiohttp import WSMsgType, web
    release = asyncio.Event()

    async def slow(request):
        await release.wait()
        return web.Response(text="slow done")

    async def fast(request):
        return web.Response(text="fast")

    async def ws(request):
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == WSMsgType.TEXT:
                await sock.send_str("echo " + msg.data)
        return sock
    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/fast", fast)
    app.router.add_get("/ws", ws)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    up_port = site._server.sockets[0].getsockname()[1]
    node = made(await NodeProcess(tmp_path, _ws_snapshot(up_port), "--workers", str(workers))
                .ready(timeout=30))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    try:
        # an idle keep-alive connection, one with a request in flight, one WebSocket
        idle = await Client(node.port).connect()
        assert (await idle.request(path="/fast")).status == 200
        busy = await Client(node.port).connect()
        assert (await busy.request(path="/fast")).status == 200
        await busy.send(b"GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n")
        sock = await session.ws_connect(f"http://127.0.0.1:{node.port}/ws",
                                        headers={"Host": "app.test"})
        await sock.send_str("before")
        assert (await sock.receive(timeout=5)).data == "echo before"
        await asyncio.sleep(0.2)  # the slow request reached the upstream

        node.proc.send_signal(signal.SIGTERM)
        # the idle keep-alive connection is closed at once
        assert await idle.closed(timeout=5)
        # the WebSocket keeps flowing while the node drains
        await asyncio.sleep(0.5)
        await sock.send_str("during drain")
        assert (await sock.receive(timeout=5)).data == "echo during drain"
        assert node.proc.poll() is None
        # the in-flight request completes, told that the connection closes
        release.set()
        res = await busy.response()
        assert res.status == 200 and res.body == b"slow done"
        assert res.one("Connection") == "close"
        assert await busy.closed(timeout=5)
        assert node.proc.poll() is None  # the WebSocket still holds the drain open
        await sock.close()
        assert sock.close_code == 1000
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, node.proc.wait, 15) == 0
    finally:
        release.set()
        await session.close()
        await runner.cleanup()


# ---------------------------------------------------------------- apply under load

async def test_config_applies_under_load_lose_no_request(made, tmp_path):
    """Two workers, 8 clients, a new snapshot every 100 ms (routes and pool change)."""
    async def respond(req, w):
        if req.url.startswith(b"/slow"):
            await asyncio.sleep(0.15)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    b1 = made(await Backend(respond).start())
    b2 = made(await Backend(respond).start())

    def snap(v: int) -> dict:
        targets = [(1, "127.0.0.1", b1.port)] + ([(2, "127.0.0.1", b2.port)] if v % 3 else [])
        s = snapshot([pool(1, targets, algorithm="least_conn" if v % 2 else "round_robin")],
                     [route(1, ["app.test"], 1,
                            response_headers={"set": [{"name": "X-V", "value": str(v)}]}),
                      route(2, [f"v{v}.test"], 1)])
        return {"version": v, "snapshot": s}
    node = made(await NodeProcess(tmp_path, snap(1)["snapshot"], "--workers", "2")
                .ready(timeout=30))
    stop = asyncio.Event()
    results = []

    async def client(i):
        c = None
        n = 0
        while not stop.is_set():
            try:
                if c is None:
                    c = await Client(node.port).connect()
                path = "/slow" if n % 5 == i % 5 else "/"
                body = b"b" * (n % 3) * 5000
                res = await c.request("POST" if body else "GET", path, body=body)
                results.append((res.status, res.one("Proxy-Status")))
            except (ConnectionError, TimeoutError) as exc:
                results.append((0, repr(exc)))
                c = None
            n += 1
            if n % 10 == 0 and c is not None:
                c.close()
                c = None
        if c is not None:
            c.close()
    tasks = [asyncio.ensure_future(client(i)) for i in range(8)]
    path = tmp_path / "snapshot.json"
    versions = 40
    for v in range(2, versions + 1):
        path.write_text(json.dumps(snap(v)))
        node.proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.1)
    await wait_for(lambda: f"version {versions} on 2 workers" in node.stderr(), 15, "last apply")
    stop.set()
    await asyncio.gather(*tasks)
    assert len(results) > 200
    assert all(r == (200, None) for r in results), [r for r in results if r != (200, None)][:10]
    assert "rejected" not in node.stderr()
    res = await get(node.port, host=f"v{versions}.test")
    assert res.status == 200


# ---------------------------------------------------------------- metrics

async def test_metric_labels_stay_bounded_and_gauge_counts_connections(made):
    from dataplane import admin
    b = made(await Backend().start())
    p = made(await Proxy(snapshot([pool(1, [(1, "127.0.0.1", b.port)])],
                                  [route(1, ["app.test"], 1, name="web")])).start())
    runner, aport = await admin.start(p.state, "127.0.0.1", 0)
    try:
        async def metrics() -> str:
            return (await get(aport, path="/metrics")).body.decode()

        def series(text: str) -> set[str]:
            return {line.rsplit(" ", 1)[0] for line in text.splitlines()
                    if line.startswith("switchyard_")}
        for i in range(20):
            await get(p.port, path=f"/warm/{i}")
            await get(p.port, host=f"nohost{i}.test", path=f"/warm/{i}")
        before = series(await metrics())
        for i in range(300):  # distinct paths, hosts, query strings, spoofed client IPs
            await get(p.port, path=f"/u/{i}?q={i}", headers=[("X-Forwarded-For", f"10.0.{i % 250}.1")])
            await get(p.port, host=f"other{i}.test", path=f"/x{i}")
        text = await metrics()
        after = series(text)
        assert after == before, sorted(after ^ before)[:10]
        for needle in ("/u/", "other1", "10.0.", "nohost"):
            assert needle not in text
        for name in ("switchyard_requests_total", "switchyard_request_duration_seconds_bucket",
                     "switchyard_upstream_duration_seconds_bucket",
                     "switchyard_active_connections", "switchyard_config_version",
                     "switchyard_config_applies_total", "switchyard_target_healthy"):
            assert name in text, name
        labels = set(re.findall(r"(\w+)=\"", text))
        assert labels <= {"route", "code_class", "proxy_status", "le", "result", "pool",
                          "target"}, labels

        def gauge(t: str) -> float:
            return float(re.search(r"^switchyard_active_connections (\S+)$", t, re.M).group(1))
        await wait_for(lambda: not p.server.connections, 5, "connections closed")
        assert gauge(await metrics()) == 0
        conns = [await Client(p.port).connect() for _ in range(3)]
        await conns[0].request()
        await wait_for(lambda: len(p.server.connections) == 3, 5, "three connections")
        assert gauge(await metrics()) == 3
        for c in conns:
            c.close()
        await wait_for(lambda: not p.server.connections, 5, "connections closed")
        assert gauge(await metrics()) == 0
        # applies by result
        with pytest.raises(schema.SnapshotInvalid):
            p.state.apply(9, "bad", {"schema": 1, "routes": [{"nope": 1}]})
        text = await metrics()
        assert 'switchyard_config_applies_total{result="ok"} 1.0' in text
        assert 'switchyard_config_applies_total{result="error"} 1.0' in text
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- route features, process

async def test_strip_prefix(made):
    b = made(await Backend().start())
    p = made(await Proxy(snapshot([pool(1, [(1, "127.0.0.1", b.port)])],
                                  [route(1, ["app.test"], 1, path="/api", path_type="prefix",
                                         strip_prefix=True),
                                   route(2, ["app.test"], 1, path="/keep", path_type="prefix")])
                         ).start())
    for path in ("/api/users/1?x=2", "/api", "/api/", "/keep/a"):
        assert (await get(p.port, path=path)).status == 200
    assert [r.url for r in b.requests] == [b"/users/1?x=2", b"/", b"/", b"/keep/a"]


def test_node_refuses_to_start_without_the_c_parser():
    """A pure-Python HTTP parser in place of llhttp: the node exits before listening."""
    import subprocess
    import sys

    from tests.dataplane.helpers import ROOT
    code = ("import httptools\n"
            "class PyParser:  # what a pure-Python fallback would look like\n"
            "    pass\n"
            "httptools.HttpRequestParser = PyParser\n"
            "from dataplane.node import main\n"
            "main(['--snapshot', '/nonexistent', '--http', '127.0.0.1:0', '--https', 'off',"
            " '--admin', '127.0.0.1:0'])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode != 0
    assert "C (llhttp) extension; refusing to start" in out.stderr
    assert "listening" not in out.stderr


@pytest.mark.parametrize("workers", [1, 2])
async def test_node_processes_run_on_uvloop(made, tmp_path, workers):
    pytest.importorskip("uvloop")
    b = made(await Backend().start())
    node = made(await NodeProcess(tmp_path, snapshot([pool(1, [(1, "127.0.0.1", b.port)])],
                                                     [route(1, ["app.test"], 1)]),
                                  "--workers", str(workers)).ready(timeout=30))
    err = node.stderr()
    pids = ([int(x) for x in err.split("pids=")[1].split()[0].split(",")] if workers > 1
            else [node.proc.pid])
    assert (await get(node.port)).status == 200
    for pid in pids:  # the process that serves has uvloop's extension mapped
        maps = open(f"/proc/{pid}/maps").read()
        assert re.search(r"/uvloop/loop\.[^/]*\.so", maps), pid


async def test_keepalive_connection_reads_on_after_an_error_that_dropped_a_held_body(made):
    """A POST whose whole body (over the 64 KiB held while connecting) arrived before the
    connect failed: the 504 keeps the connection, which must go on reading (regression:
    it stayed paused, so the next request hung and a client close was never seen)."""
    b = made(await Backend().start())
    lsock = socket.socket()  # a full accept queue: connects hang until the timeout
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(lsock.getsockname())
        fillers.append(f)
    try:
        p = made(await Proxy(snapshot(
            [pool(1, [(1, "127.0.0.1", lsock.getsockname()[1])], connect_timeout=0.3),
             pool(2, [(2, "127.0.0.1", b.port)])],
            [route(1, ["dead.test"], 1), route(2, ["app.test"], 2)])).start())
        kept = 0
        for _ in range(10):
            c = await Client(p.port).connect()
            res = await c.request("POST", "/p", host="dead.test", body=b"y" * 70_000)
            assert_error(res, 504, "connection_timeout")
            if res.one("Connection") is None:  # the body had arrived: kept alive
                kept += 1
                res = await c.request("GET", "/", host="app.test", )
                assert res.status == 200
            c.close()
            await wait_for(lambda: not p.server.connections, 5, "the client's close noticed")
        assert kept
    finally:
        for f in fillers:
            f.close()
        lsock.close()
