"""WebSocket proxying: aiohttp as the client and as the upstream WebSocket server,
through a real in-process proxy on loopback."""
import json
import ssl
import time

import aiohttp
import pytest
import trustme
from aiohttp import WSMsgType, web

from tests.dataplane.helpers import Client, Proxy, pool, route, snapshot, wait_for


class WSUpstream:
    """An aiohttp server: /ws echoes (and greets), /reject answers 403, /plain is HTTP."""

    def __init__(self):
        self.requests = []        # every request that reached the upstream
        self.close_codes = []     # close codes the upstream received from clients
        self.open = 0
        self.received = []

    async def start(self) -> "WSUpstream":
        app = web.Application(middlewares=[self._count])
        app.router.add_get("/ws", self.ws)
        app.router.add_get("/reject", self.reject)
        app.router.add_get("/plain", self.plain)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    @web.middleware
    async def _count(self, request, handler):
        self.requests.append((request.path, dict(request.headers)))
        return await handler(request)

    async def ws(self, request):
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        self.open += 1
        await ws.send_str("welcome")
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self.received.append(msg.data)
                    if msg.data == "close-me":
                        await ws.close(code=4001, message=b"bye")
                        break
                    await ws.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.received.append(len(msg.data))
                    await ws.send_bytes(msg.data)
        finally:
            self.open -= 1
            if ws.close_code is not None:
                self.close_codes.append(ws.close_code)
        return ws

    async def plain(self, request):
        return web.Response(text="plain")

    async def reject(self, request):
        return web.Response(status=403, text="no websocket for you")

    async def close(self):
        await self.runner.cleanup()


@pytest.fixture
async def env():
    made = []

    async def make(websocket=True, **proxy_kw):
        up = await WSUpstream().start()
        snap = snapshot([pool(1, [(1, "127.0.0.1", up.port)])],
                        [route(1, ["app.test"], 1, websocket=websocket)])
        snap["certificates"] = proxy_kw.pop("certificates", [])
        p = await Proxy(snap, **proxy_kw).start()
        session = aiohttp.ClientSession()
        made.append((up, p, session))
        return up, p, session
    yield make
    for up, p, session in made:
        await session.close()
        await p.close()
        await up.close()


def ws_url(p, path="/ws"):
    return f"http://127.0.0.1:{p.port}{path}"


async def test_echo_text_and_binary_both_ways(env):
    up, p, session = await env()
    async with session.ws_connect(ws_url(p), headers={"Host": "app.test"}) as ws:
        assert (await ws.receive(timeout=5)).data == "welcome"  # upstream -> client first
        await ws.send_str("héllo")
        assert (await ws.receive(timeout=5)).data == "héllo"
        blob = bytes(range(256)) * 700  # 175 KiB, several reads both ways
        await ws.send_bytes(blob)
        msg = await ws.receive(timeout=5)
        assert msg.type == WSMsgType.BINARY and msg.data == blob
        await ws.ping()  # control frames pass too
    # the upstream saw a proper upgrade request carrying the proxy's headers
    path, headers = up.requests[-1]
    assert path == "/ws"
    assert headers["Upgrade"].lower() == "websocket"
    assert "upgrade" in headers["Connection"].lower()
    assert headers["Via"] == "1.1 switchyard"
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    await wait_for(lambda: p.server.metrics.active_connections == 0 and not p.server.connections,
                   what="tunnel accounting")


async def test_backpressure_bulk_both_ways(env):
    up, p, session = await env()
    async with session.ws_connect(ws_url(p), headers={"Host": "app.test"},
                                  max_msg_size=16 * 1024 * 1024) as ws:
        assert (await ws.receive(timeout=5)).data == "welcome"
        chunk = b"x" * (1024 * 1024)
        for _ in range(8):  # 8 MiB each way without reading in between
            await ws.send_bytes(chunk)
        for _ in range(8):
            msg = await ws.receive(timeout=10)
            assert msg.type == WSMsgType.BINARY and len(msg.data) == len(chunk)


async def test_close_codes_pass_through_both_ways(env):
    up, p, session = await env()
    async with session.ws_connect(ws_url(p), headers={"Host": "app.test"}) as ws:
        await ws.receive(timeout=5)
        await ws.send_str("close-me")
        msg = await ws.receive(timeout=5)
        assert msg.type == WSMsgType.CLOSE
        assert msg.data == 4001 and msg.extra == "bye"
    async with session.ws_connect(ws_url(p), headers={"Host": "app.test"}) as ws:
        await ws.receive(timeout=5)
        await ws.close(code=4002, message=b"client leaves")
    await wait_for(lambda: 4002 in up.close_codes, what="client close code at upstream")


async def test_refused_on_route_without_websocket(env):
    up, p, session = await env(websocket=False)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(ws_url(p), headers={"Host": "app.test"})
    assert info.value.status == 403
    assert "http_request_denied" in info.value.headers["Proxy-Status"]
    assert up.requests == []  # nothing reached the upstream
    # ordinary requests on that route still work
    async with session.get(ws_url(p, "/plain"), headers={"Host": "app.test"}) as res:
        assert res.status == 200


async def test_upstream_rejecting_upgrade_is_relayed_then_closed(env):
    up, p, session = await env()
    c = await Client(p.port).connect()
    await c.send(b"GET /reject HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    res = await c.response()
    assert res.status == 403 and res.body == b"no websocket for you"
    assert res.one("Connection") == "close"
    assert await c.closed()
    assert up.requests[-1][0] == "/reject"


async def test_other_upgrades_are_stripped(env):
    up, p, session = await env()
    c = await Client(p.port).connect()
    await c.send(b"GET /plain HTTP/1.1\r\nHost: app.test\r\nUpgrade: h2c\r\n"
                 b"Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
    res = await c.response()
    assert res.status == 200 and res.body == b"plain"
    headers = up.requests[-1][1]
    assert "Upgrade" not in headers and "HTTP2-Settings" not in headers
    assert await c.closed()


async def test_idle_timeout_closes_tunnel(env):
    up, p, session = await env(ws_idle_timeout=1.0)
    async with session.ws_connect(ws_url(p), headers={"Host": "app.test"}) as ws:
        assert (await ws.receive(timeout=5)).data == "welcome"
        await ws.send_str("still here")  # activity resets the idle clock
        assert (await ws.receive(timeout=5)).data == "still here"
        t0 = time.monotonic()
        msg = await ws.receive(timeout=10)
        waited = time.monotonic() - t0
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)
        assert 0.8 <= waited < 5
    await wait_for(lambda: up.open == 0, what="upstream side closed")
    await wait_for(lambda: not p.server.connections, what="client connection released")


async def test_message_over_limit_closes_tunnel(env):
    up, p, session = await env(ws_max_message=64 * 1024)
    async with session.ws_connect(ws_url(p), headers={"Host": "app.test"}) as ws:
        assert (await ws.receive(timeout=5)).data == "welcome"
        await ws.send_bytes(b"a" * 60000)  # under the limit
        assert len((await ws.receive(timeout=5)).data) == 60000
        await ws.send_bytes(b"a" * 70000)
        msg = await ws.receive(timeout=5)
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)
    assert 70000 not in up.received
    await wait_for(lambda: up.open == 0, what="upstream side closed")


async def test_access_log_line_for_tunnel(env, tmp_path):
    log = tmp_path / "a.log"
    up, p, session = await env(log_path=str(log))
    async with session.ws_connect(ws_url(p), headers={"Host": "app.test"}) as ws:
        await ws.receive(timeout=5)
        await ws.send_str("x" * 100)
        await ws.receive(timeout=5)
    await wait_for(lambda: not p.server.connections, what="tunnel end")
    p.log.flush()
    line = json.loads(log.read_text().splitlines()[-1])
    assert line["status"] == 101 and line["upstream_status"] == 101
    assert line["bytes_in"] > 100 and line["bytes_out"] > 100


async def test_websocket_over_https_listener(env):
    ca = trustme.CA()
    leaf = ca.issue_cert("app.test")
    certs = [{"id": 1, "name": "app", "tenant": None, "hosts": ["app.test"],
              "certificate_pem": leaf.cert_chain_pems[0].bytes().decode(),
              "private_key_pem": leaf.private_key_pem.bytes().decode(), "fingerprint": "f"}]
    up, p, session = await env(https=True, certificates=certs)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    conn = aiohttp.TCPConnector(ssl=ctx, resolver=_Loopback())
    async with aiohttp.ClientSession(connector=conn) as s:
        async with s.ws_connect(f"https://app.test:{p.tls_port}/ws") as ws:
            assert (await ws.receive(timeout=5)).data == "welcome"
            await ws.send_str("secure")
            assert (await ws.receive(timeout=5)).data == "secure"
    assert up.requests[-1][1]["X-Forwarded-Proto"] == "https"


class _Loopback(aiohttp.abc.AbstractResolver):
    async def resolve(self, host, port=0, family=0):
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": 2,
                 "proto": 0, "flags": 0}]

    async def close(self):
        pass


def _frame(payload_len: int, opcode: int = 2, fin: bool = True, mask: bool = True) -> bytes:
    b0 = (0x80 if fin else 0) | opcode
    m = 0x80 if mask else 0
    if payload_len < 126:
        head = bytes([b0, m | payload_len])
    elif payload_len < 65536:
        head = bytes([b0, m | 126]) + payload_len.to_bytes(2, "big")
    else:
        head = bytes([b0, m | 127]) + payload_len.to_bytes(8, "big")
    return head + (b"\x01\x02\x03\x04" if mask else b"") + b"z" * payload_len


def test_frame_guard_counts_messages_across_fragments_and_split_reads():
    from dataplane.websocket import FrameGuard
    # fragmented message 3 x 40000 = 120000 with a ping in between; limit 100000
    stream = (_frame(40000, 2, fin=False) + _frame(5, 9) + _frame(40000, 0, fin=False)
              + _frame(40000, 0, fin=True))
    for step in (1, 7, 13, 4096, len(stream)):
        g = FrameGuard(100_000)
        results = [g.feed(stream[i:i + step]) for i in range(0, len(stream), step)]
        third = len(stream) - len(_frame(40000, 0))  # where the exceeding header starts
        first = results.index(False)
        assert (first + 1) * step >= third + 8 and first * step < third + 8, step
        assert g.feed(b"more") is False  # once over, always over
    # the same bytes as separate messages fit, in any read size; 64-bit lengths parse
    ok = _frame(40000) + _frame(5, 9) + _frame(40000) + _frame(40000) + _frame(70000, 1)
    for step in (1, 3, 14, 65536):
        g = FrameGuard(100_000)
        assert all(g.feed(ok[i:i + step]) for i in range(0, len(ok), step)), step
        assert g.skip == 0 and g.hdr == b"" and g.msg == 0
    g = FrameGuard(100_000)
    assert g.feed(_frame(200_000)[:20]) is False  # 64-bit length over the limit
