"""Route header rules (set, add, remove) and the client body-idle deadline, through a
real in-process proxy and real loopback backends (forwarding rules, limits)."""
import asyncio

import pytest

from dataplane import node
from tests.dataplane.helpers import Backend, Client, Proxy, get, pool, route, snapshot


@pytest.fixture
async def made():
    things = []
    yield things
    for t in things:
        await t.close()


async def start(made, respond=None, **route_kw):
    b = await Backend(respond).start()
    made.append(b)
    p = await Proxy(snapshot([pool(1, [(1, "127.0.0.1", b.port)])],
                             [route(1, ["app.test"], 1, **route_kw)])).start()
    made.append(p)
    return b, p


def rules(set_=(), add=(), remove=()):
    return {"set": [{"name": k, "value": v} for k, v in set_],
            "add": [{"name": k, "value": v} for k, v in add], "remove": list(remove)}


async def upstream_response(req, w):
    body = b"ok"
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Powered-By: php/5\r\n"
            b"Cache-Control: public, max-age=600\r\nVary: Accept\r\nX-Upstream: kept\r\n\r\n" + body)


# ---------------------------------------------------------------- header rules

async def test_request_header_rules_are_applied_before_the_backend_sees_the_request(made):
    b, p = await start(made, request_headers=rules(
        set_=[("X-Env", "prod")], add=[("X-Tag", "edge")], remove=["X-Debug", "Cookie"]))
    res = await get(p.port, headers=[("X-Env", "dev"), ("X-Env", "test"), ("X-Tag", "client"),
                                     ("X-Debug", "1"), ("Cookie", "secret=1"), ("X-Other", "y")])
    assert res.status == 200
    req = b.requests[-1]
    assert req.header("X-Env") == [b"prod"]              # set: replaces every client value
    assert req.header("X-Tag") == [b"client", b"edge"]   # add: keeps the client's and adds
    assert req.header("X-Debug") == [] and req.header("Cookie") == []  # remove
    assert req.header("X-Other") == [b"y"]               # everything else passes through
    # a set header is sent even when the client did not send it
    await get(p.port)
    assert b.requests[-1].header("X-Env") == [b"prod"]
    assert b.requests[-1].header("X-Tag") == [b"edge"]


async def test_response_header_rules_are_applied_before_the_client_sees_the_response(made):
    b, p = await start(made, upstream_response, response_headers=rules(
        set_=[("Cache-Control", "no-store")], add=[("Vary", "Origin"), ("X-Frame-Options", "DENY")],
        remove=["X-Powered-By"]))
    res = await get(p.port)
    assert res.status == 200 and res.body == b"ok"
    assert res.header("Cache-Control") == [b"no-store"]
    assert res.header("Vary") == [b"Accept", b"Origin"]
    assert res.header("X-Frame-Options") == [b"DENY"]
    assert res.header("X-Powered-By") == []
    assert res.header("X-Upstream") == [b"kept"]
    assert res.header("X-Request-ID")  # the proxy's own headers are still there


async def test_without_rules_headers_pass_unchanged(made):
    b, p = await start(made, upstream_response)
    res = await get(p.port, headers=[("X-Debug", "1")])
    assert b.requests[-1].header("X-Debug") == [b"1"]
    assert res.header("X-Powered-By") == [b"php/5"]
    assert res.header("Cache-Control") == [b"public, max-age=600"]


# ---------------------------------------------------------------- body idle deadline

@pytest.fixture
async def idle_env(made):
    b, p = await start(made)
    p.server.body_idle_timeout = 1.0
    stop = asyncio.Event()

    async def sweeper():  # what the node's ticker does once a second
        while not stop.is_set():
            p.server.sweep()
            await asyncio.sleep(0.05)
    task = asyncio.ensure_future(sweeper())
    yield b, p
    stop.set()
    await task


HEAD = b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n"


async def test_a_client_that_stops_sending_its_body_is_cut_at_the_body_idle_deadline(idle_env):
    b, p = idle_env
    c = await Client(p.port).connect()
    loop = asyncio.get_running_loop()
    await c.send(HEAD + b"x" * 10)  # 10 of 100 bytes, then silence
    t0 = loop.time()
    assert await c.closed(timeout=5)
    elapsed = loop.time() - t0
    c.close()
    assert 0.9 < elapsed < 3.0, elapsed
    assert b.requests == []  # the backend never got a complete request


async def test_a_slow_but_steady_body_is_not_cut(idle_env):
    b, p = idle_env
    c = await Client(p.port).connect()
    await c.send(HEAD)
    for _ in range(10):  # 2 s in all, longer than the deadline, never idle for 1 s
        await asyncio.sleep(0.2)
        await c.send(b"y" * 10)
    res = await c.response()
    c.close()
    assert res.status == 200
    assert b.requests[-1].body == b"y" * 100


def test_the_body_idle_deadline_is_a_node_setting(monkeypatch):
    monkeypatch.delenv("SWITCHYARD_NODE_BODY_IDLE_TIMEOUT", raising=False)
    assert node.parse_args(["--control-plane", ""]).body_idle_timeout == 30.0
    assert node.parse_args(["--body-idle-timeout", "1.5"]).body_idle_timeout == 1.5
    monkeypatch.setenv("SWITCHYARD_NODE_BODY_IDLE_TIMEOUT", "2")
    assert node.parse_args([]).body_idle_timeout == 2.0
