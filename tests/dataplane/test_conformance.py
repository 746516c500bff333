"""HTTP/1.1 conformance cases from peer suites: response order
after a parse error, unknown methods, Upgrade without Connection: upgrade, invalid
Host, OPTIONS *, and one error vocabulary in the header, the access log and /metrics.
All against a real listener over a raw socket, with a recording backend."""
import asyncio
import json

import pytest

from dataplane import admin
from tests.dataplane.helpers import Backend, Client, Proxy, get, pool, route, snapshot, wait_for
from tests.dataplane.test_strict_parsing import RawBackend

H = b"Host: app.test\r\n"


@pytest.fixture
async def env(tmp_path):
    b = await RawBackend().start()
    log = tmp_path / "access.log"
    p = await Proxy(snapshot([pool(1, [(1, "127.0.0.1", b.port)])],
                             [route(1, ["app.test"], 1),
                              route(2, ["ws.test"], 1, websocket=True)]),
                    log_path=str(log)).start()

    def lines():
        p.log.flush()
        return [json.loads(x) for x in log.read_text().splitlines()]
    yield b, p, lines
    await p.close()
    await b.close()


async def exchange(p, raw: bytes):
    c = await Client(p.port).connect()
    await c.send(raw)
    return c, await c.response()


def error_type(res) -> str:
    ps = res.one("Proxy-Status")
    assert ps.startswith("switchyard; error="), ps
    return ps.split("error=", 1)[1].split(";", 1)[0]


# ---------------------------------------------------------------- 1. response order

async def test_garbage_after_a_closing_request_does_not_replace_its_response(env):
    b, p, lines = env
    c, res = await exchange(p, b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"
                            b"Invalid\r\n\r\n")
    assert res.status == 200 and res.body == b"ok"
    assert await c.closed()
    c.close()
    assert len(b.requests) == 1
    assert [x["status"] for x in lines()] == [200]


async def test_chunked_request_followed_by_nul_gets_its_response_then_400(env):
    b, p, lines = env
    c, res = await exchange(p, b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                            b"3\r\nabc\r\n0\r\n\r\n\x00")
    assert res.status == 200 and res.body == b"ok"
    err = await c.response()
    assert err.status == 400 and error_type(err) == "http_request_error"
    assert await c.closed()
    c.close()
    assert len(b.requests) == 1 and b"\x00" not in bytes(b.raw)
    assert [x["status"] for x in lines()] == [200, 400]


async def test_garbage_during_a_slow_response_is_answered_after_it(tmp_path):
    release = asyncio.Event()

    async def slow(req, w):
        await release.wait()
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
    b = await Backend(slow).start()
    log = tmp_path / "access.log"
    p = await Proxy(snapshot([pool(1, [(1, "127.0.0.1", b.port)])],
                             [route(1, ["app.test"], 1)]), log_path=str(log)).start()
    try:
        c = await Client(p.port).connect()
        await c.send(b"GET /slow HTTP/1.1\r\n" + H + b"\r\n")
        await wait_for(lambda: len(b.requests) == 1, what="the GET upstream")
        await c.send(b"Invalid\r\n\r\n")
        conn = next(iter(p.server.connections))
        await wait_for(lambda: conn.discard, what="the parse error")
        release.set()
        res = await c.response()
        assert res.status == 200 and res.body == b"slow"  # the GET's own response
        err = await c.response()
        assert err.status == 400 and err.one("Connection") == "close"
        assert await c.closed()
        c.close()
        p.log.flush()
        logged = [json.loads(x) for x in log.read_text().splitlines()]
        assert [(x["path"], x["status"]) for x in logged] == [("/slow", 200), ("", 400)]
        assert len(b.requests) == 1
    finally:
        await p.close()
        await b.close()


async def test_pipelined_request_with_a_malformed_body_waits_its_turn_and_is_never_sent(env):
    b, p, lines = env
    c, res = await exchange(p, b"GET /first HTTP/1.1\r\n" + H + b"\r\n"
                            b"POST /second HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                            b"zz\r\n")
    assert res.status == 200
    assert (await c.response()).status == 400
    assert await c.closed()
    c.close()
    assert [u for u, _ in b.requests] == [b"/first"] and b"/second" not in bytes(b.raw)


# ---------------------------------------------------------------- 2. unknown methods

async def test_a_method_the_parser_does_not_know_gets_501_and_reaches_no_upstream(env):
    b, p, lines = env
    c, res = await exchange(p, b"FOOBAR / HTTP/1.1\r\n" + H + b"\r\n")
    assert res.status == 501
    assert res.one("Proxy-Status") == ('switchyard; error=http_request_error; '
                                       'details="request method not supported by the proxy"')
    assert await c.closed()
    c.close()
    assert b.connections == 0
    line = lines()[-1]
    assert (line["status"], line["proxy_status"], line["reason"]) == (
        501, "http_request_error", "method_not_implemented")
    for method in (b"PURGE", b"PROPFIND", b"QUERY"):  # token methods llhttp knows pass
        c, res = await exchange(p, method + b" /m HTTP/1.1\r\n" + H + b"\r\n")
        assert res.status == 200, method
        c.close()
    assert [u for u, _ in b.requests] == [b"/m"] * 3


# ---------------------------------------------------------------- 3. Upgrade alone

async def test_upgrade_without_connection_upgrade_is_a_plain_request(env):
    b, p, lines = env
    c, res = await exchange(p, b"GET /plain HTTP/1.1\r\n" + H + b"Upgrade: websocket\r\n\r\n")
    assert res.status == 200 and res.body == b"ok"
    assert (await c.request(path="/again")).status == 200  # the connection stays usable
    c.close()
    assert b.header(0, "Upgrade") == [] and b.header(0, "Connection") == []
    # with Connection: upgrade it is an upgrade, refused on a route without WebSocket
    c, res = await exchange(p, b"GET /ws HTTP/1.1\r\n" + H + b"Connection: upgrade\r\n"
                            b"Upgrade: websocket\r\n\r\n")
    assert res.status == 403 and error_type(res) == "http_request_denied"
    c.close()


# ---------------------------------------------------------------- 4. invalid Host

INVALID_HOSTS = [
    b"GET / HTTP/1.1\r\nHost: user@app.test\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: app.test/x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: app.test, ws.test\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",  # HTTP/1.0 without Host: no route serves no host
]


async def test_invalid_host_is_400_with_proxy_status_and_valid_hosts_route(env):
    b, p, lines = env
    for raw in INVALID_HOSTS:
        c, res = await exchange(p, raw)
        assert res.status == 400, (raw, res.status, res.body)
        assert res.one("Proxy-Status") == ('switchyard; error=http_request_error; '
                                           'details="missing or invalid Host header"')
        assert res.one("X-Request-ID")
        c.close()
        assert lines()[-1]["reason"] == "invalid_host"
    assert b.connections == 0
    for host in ("app.test", "APP.test:80", "app.test."):
        assert (await get(p.port, host=host)).status == 200, host
    assert (await get(p.port, host="[::1]:8080")).status == 404  # a valid host, no route


# ---------------------------------------------------------------- 5. one vocabulary

async def test_header_log_and_metrics_name_the_same_error_type(env):
    b, p, lines = env
    runner, admin_port = await admin.start(p.state, "127.0.0.1", 0)
    try:
        c, res = await exchange(p, b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 9000
                                + b"\r\n\r\n")
        assert res.status == 431
        assert res.one("Proxy-Status") == ('switchyard; error=http_request_error; '
                                           'details="request headers too large"')
        c.close()
        c, res = await exchange(p, b"GET /chat HTTP/1.1\r\n" + H + b"Connection: upgrade\r\n"
                                b"Upgrade: websocket\r\n\r\n")
        assert res.status == 403 and error_type(res) == "http_request_denied"
        c.close()
        assert (await get(p.port, host="nope.test")).status == 404
        logged = [(x["status"], x["proxy_status"], x["reason"]) for x in lines()]
        assert logged == [(431, "http_request_error", "headers_too_large"),
                          (403, "http_request_denied", "websocket_denied"),
                          (404, "destination_not_found", None)]
        text = (await get(admin_port, path="/metrics")).body.decode()
        assert ('switchyard_requests_total{code_class="4xx",proxy_status="http_request_error",'
                'route="-"} 1.0') in text
        assert ('switchyard_requests_total{code_class="4xx",proxy_status="http_request_denied",'
                'route="route1"} 1.0') in text
        for word in ("headers_too_large", "websocket_denied", "bad_request"):
            assert word not in text
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- 6. OPTIONS * and long methods

async def test_options_asterisk_is_answered_by_the_proxy(env):
    b, p, lines = env
    c, res = await exchange(p, b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n")
    assert res.status == 200 and res.one("Proxy-Status") is None
    assert "GET" in res.one("Allow") and "OPTIONS" in res.one("Allow")
    assert res.one("X-Request-ID")
    assert (await c.request()).status == 200  # keep-alive: the next request is served
    c.close()
    assert [u for u, _ in b.requests] == [b"/"]
    c, res = await exchange(p, b"GET * HTTP/1.1\r\n" + H + b"\r\n")  # only OPTIONS may
    assert res.status == 400
    c.close()


async def test_a_100kb_method_is_414_like_a_100kb_target(env):
    b, p, lines = env
    for raw in (b"A" * 100_000 + b" / HTTP/1.1\r\n" + H + b"\r\n",
                b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n" + H + b"\r\n"):
        c = await Client(p.port).connect()
        c.w.write(raw)  # the node answers before reading it all
        res = await c.response()
        assert res.status == 414 and error_type(res) == "http_request_error"
        assert await c.closed()
        c.close()
    assert b.connections == 0
