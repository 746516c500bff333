"""Forwarding through a real in-process proxy to real loopback backends."""
import asyncio

import pytest

from tests.dataplane.helpers import Backend, Client, Proxy, get, pool, route, snapshot, wait_for


async def setup(respond=None, trusted=(), **route_kw):
    b = await Backend(respond).start()
    p = await Proxy(snapshot([pool(1, [(1, "127.0.0.1", b.port)])],
                             [route(1, ["app.test"], 1, **route_kw)]), trusted).start()
    return b, p


@pytest.fixture
async def env():
    made = []

    async def make(*a, **kw):
        b, p = await setup(*a, **kw)
        made.append((b, p))
        return b, p
    yield make
    for b, p in made:
        await p.close()
        await b.close()


async def test_spoofed_forwarding_headers_from_untrusted_peer_are_replaced(env):
    b, p = await env()
    res = await get(p.port, headers=[("X-Forwarded-For", "6.6.6.6"), ("X-Real-IP", "6.6.6.6"),
                                     ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil"),
                                     ("X-Forwarded-Port", "1"), ("Forwarded", "for=6.6.6.6")])
    assert res.status == 200
    req = b.requests[-1]
    assert req.header("X-Forwarded-For") == [b"127.0.0.1"]
    assert req.header("X-Real-IP") == [b"127.0.0.1"]
    assert req.header("X-Forwarded-Proto") == [b"http"]
    assert req.header("X-Forwarded-Host") == [b"app.test"]
    assert req.header("X-Forwarded-Port") == [str(p.port).encode()]
    assert req.header("Forwarded") == []


async def test_forwarding_headers_from_trusted_peer_are_kept(env):
    b, p = await env(trusted=("127.0.0.0/8",))
    await get(p.port, headers=[("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https"),
                               ("X-Real-IP", "203.0.113.9")])
    req = b.requests[-1]
    assert req.header("X-Forwarded-For") == [b"203.0.113.9, 127.0.0.1"]
    assert req.header("X-Forwarded-Proto") == [b"https"]
    assert req.header("X-Real-IP") == [b"203.0.113.9"]


async def test_forwarded_header_when_enabled(env):
    b, p = await env(forwarded=True)
    await get(p.port, headers=[("Forwarded", "for=6.6.6.6")])
    assert b.requests[-1].header("Forwarded") == [b'for=127.0.0.1;proto=http;host="app.test"']


async def test_hop_by_hop_headers_never_cross_either_way(env):
    extra = (b"Connection: X-Up-Secret\r\nX-Up-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
             b"Proxy-Authenticate: Basic\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Fine: yes\r\n")

    async def respond(req, w):
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + extra + b"\r\nok")
    b, p = await env(respond)
    res = await get(p.port, headers=[
        ("Connection", "keep-alive, X-Forwarded-For, X-Request-ID, Via, X-Client-Secret"),
        ("X-Client-Secret", "s"), ("Keep-Alive", "300"), ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"), ("Trailer", "X-T"), ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic eA=="), ("X-Kept", "1")])
    req = b.requests[-1]
    names = {k.lower() for k, _ in req.headers}
    for hop in (b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade",
                b"proxy-authorization", b"x-client-secret", b"transfer-encoding"):
        assert hop not in names, hop
    # a Connection header cannot remove what the proxy adds
    assert req.header("X-Forwarded-For") == [b"127.0.0.1"]
    assert req.header("Via") == [b"1.1 switchyard"]
    assert len(req.header("X-Request-ID")) == 1
    assert req.header("X-Kept") == [b"1"]
    rnames = {k.lower() for k, _ in res.headers}
    for hop in (b"x-up-secret", b"keep-alive", b"proxy-authenticate", b"trailer", b"upgrade"):
        assert hop not in rnames, hop
    assert res.one("X-Fine") == "yes"
    assert res.one("Via") == "1.1 switchyard"


async def test_via_loop_is_refused(env):
    b, p = await env()
    res = await get(p.port, headers=[("Via", "1.0 other, 1.1 switchyard")])
    assert res.status == 508
    assert "error=proxy_loop_detected" in res.one("Proxy-Status")
    assert b.requests == []
    res = await get(p.port, headers=[("Via", "1.1 other")])
    assert res.status == 200
    assert b.requests[-1].header("Via") == [b"1.1 other, 1.1 switchyard"]


async def test_request_id_kept_when_valid_generated_otherwise(env):
    b, p = await env()
    res = await get(p.port, headers=[("X-Request-ID", "abc-123.X_y")])
    assert res.one("X-Request-ID") == "abc-123.X_y"
    assert b.requests[-1].header("X-Request-ID") == [b"abc-123.X_y"]
    res = await get(p.port, headers=[("X-Request-ID", "bad id!")])
    rid = res.one("X-Request-ID")
    assert rid and rid != "bad id!"
    assert b.requests[-1].header("X-Request-ID") == [rid.encode()]
    res1, res2 = await get(p.port), await get(p.port)
    assert res1.one("X-Request-ID") != res2.one("X-Request-ID")
    err = await get(p.port, host="unknown.test")
    assert err.one("X-Request-ID")


async def test_preserve_host_and_target_host(env):
    b, p = await env()
    await get(p.port, host="APP.test:1234")
    assert b.requests[-1].header("Host") == [b"APP.test:1234"]
    b2, p2 = await env(preserve_host=False)
    await get(p2.port)
    assert b2.requests[-1].header("Host") == [f"127.0.0.1:{b2.port}".encode()]


async def test_keep_alive_reuses_upstream_connection(env):
    b, p = await env()
    c = await Client(p.port).connect()
    for _ in range(5):
        assert (await c.request()).status == 200
    c.close()
    for _ in range(3):
        assert (await get(p.port)).status == 200
    assert len(b.requests) == 8
    assert b.connections == 1


async def test_chunked_request_and_response_are_reframed(env):
    async def respond(req, w):
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    b, p = await env(respond)
    c = await Client(p.port).connect()
    await c.send(b"POST /up HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    res = await c.response()
    assert res.status == 200 and res.body == b"abcdefg"
    assert res.one("Transfer-Encoding") == "chunked"
    assert bytes(b.requests[-1].body) == b"hello world"
    # the same connection still works
    assert (await c.request()).status == 200
    c.close()


async def test_close_delimited_response_to_http10_and_11_clients(env):
    async def respond(req, w):
        w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-eof")
        w.close()
    b, p = await env(respond)
    res = await get(p.port)
    assert res.body == b"until-eof"
    c = await Client(p.port).connect()
    await c.send(b"GET / HTTP/1.0\r\nHost: app.test\r\n\r\n")
    data = await asyncio.wait_for(c.r.read(), 5)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\nuntil-eof")
    c.close()


async def test_head_and_204_have_no_body(env):
    b, p = await env()
    c = await Client(p.port).connect()
    res = await c.request("HEAD")
    assert res.status == 200 and res.one("Content-Length") == "2" and res.body == b""
    assert (await c.request()).body == b"ok"  # framing intact after HEAD
    c.close()


async def test_expect_100_continue_answered_by_proxy(env):
    b, p = await env()
    c = await Client(p.port).connect()
    await c.send(b"PUT /x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    interim = await c.response(head=True)
    assert interim.status == 100
    await c.send(b"abc")
    res = await c.response()
    assert res.status == 200
    assert bytes(b.requests[-1].body) == b"abc" and b.requests[-1].header("Expect") == []
    c.close()


async def test_pipelined_requests_answered_in_order(env):
    async def respond(req, w):
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(req.url), req.url))
    b, p = await env(respond)
    c = await Client(p.port).connect()
    await c.send(b"".join(b"GET /%d HTTP/1.1\r\nHost: app.test\r\n\r\n" % i for i in range(4)))
    bodies = [(await c.response()).body for _ in range(4)]
    assert bodies == [b"/0", b"/1", b"/2", b"/3"]
    c.close()


@pytest.mark.parametrize("raw", [
    b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: app.test\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: app.test\r\nX: a\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\nHost: app.test\n\n",
    b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nHost: app\x01.test\r\n\r\n",
], ids=["cl+te", "dup-cl", "conflicting-cl", "no-host", "dup-host", "obs-fold", "bare-lf",
        "bad-chunk", "te-not-chunked", "ctl-char"])
async def test_strict_parsing_rejects_and_sends_nothing_upstream(env, raw):
    b, p = await env()
    c = await Client(p.port).connect()
    await c.send(raw)
    res = await c.response()
    assert res.status == 400
    assert "error=http_request_error" in res.one("Proxy-Status")
    assert res.one("X-Request-ID")
    assert await c.closed()
    assert b.requests == [] and b.connections == 0


async def test_header_limits(env):
    b, p = await env()
    res = await get(p.port, headers=[("X-Big", "a" * 9000)])
    assert res.status == 431
    res = await get(p.port, headers=[(f"X-H{i}", "v") for i in range(120)])
    assert res.status == 431
    res = await get(p.port, path="/" + "a" * 9000)
    assert res.status == 414
    assert b.requests == []


async def test_body_limit_413(env):
    b, p = await env(max_body_size=10)
    res = await get(p.port, method="POST", body=b"x" * 11)
    assert res.status == 413
    c = await Client(p.port).connect()
    await c.send(b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n")
    res = await c.response()
    assert res.status == 413
    assert await c.closed()


async def test_config_swap_keeps_in_flight_request(env):
    release = asyncio.Event()

    async def respond(req, w):
        if req.url == b"/slow":
            await release.wait()
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
    b, p = await env(respond)
    c = await Client(p.port).connect()
    await c.send(b"GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n")
    await wait_for(lambda: len(b.requests) == 1, what="request upstream")
    p.state.apply(2, "h2", snapshot([pool(1, [(1, "127.0.0.1", b.port)])],
                                    [route(1, ["other.test"], 1)]))
    release.set()
    res = await c.response()
    assert res.status == 200 and res.body == b"slow"
    assert (await get(p.port)).status == 404
    assert (await get(p.port, host="other.test")).status == 200
    c.close()


async def test_absolute_form_uses_its_host(env):
    b, p = await env()
    c = await Client(p.port).connect()
    await c.send(b"GET http://app.test/abs?q=1 HTTP/1.1\r\nHost: app.test\r\n\r\n")
    res = await c.response()
    assert res.status == 200
    assert b.requests[-1].url == b"/abs?q=1" and b.requests[-1].header("Host") == [b"app.test"]
    # an authority that differs from Host is refused (test_strict_parsing.py)
    await c.send(b"GET http://app.test/abs HTTP/1.1\r\nHost: ignored.test\r\n\r\n")
    assert (await c.response()).status == 400
    c.close()


def _slow_body_responder(body: bytes, pieces: int, trailing: bytes = b""):
    """A Content-Length response whose body arrives in ``pieces`` separate writes, so the
    proxy sees the head and the body in different reads (the parser-bypass path)."""
    async def respond(req, w):
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        await w.drain()
        step = -(-len(body) // pieces)
        for i in range(0, len(body), step):
            await asyncio.sleep(0.01)
            w.write(body[i:i + step])
            await w.drain()
        if trailing:
            w.write(trailing)
    return respond


async def test_body_split_across_reads_arrives_exact_and_connection_is_reused(env):
    body = bytes(range(256)) * 3000  # 768,000 bytes, not a multiple of any read size
    b, p = await env(_slow_body_responder(body, 7))
    c = await Client(p.port).connect()
    for _ in range(3):
        res = await c.request("GET", "/big")
        assert res.status == 200
        assert res.body == body
    c.close()
    assert b.connections == 1  # the upstream keep-alive connection survived each body


async def test_bytes_after_a_content_length_body_are_not_relayed_and_connection_not_reused(env):
    body = b"x" * 200_000
    b, p = await env(_slow_body_responder(body, 3, trailing=b"HTTP/1.1 200 OK\r\nsmuggled"))
    c = await Client(p.port).connect()
    res = await c.request("GET", "/one")
    assert res.status == 200 and res.body == body
    res = await c.request("GET", "/two")  # must not be answered by the smuggled bytes
    assert res.status == 200 and res.body == body
    c.close()
    assert b.connections == 2


async def test_apply_closes_idle_upstream_connections_of_removed_targets_only():
    release = asyncio.Event()

    async def slow(req, w):
        await release.wait()
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
    old, kept, new = await Backend().start(), await Backend().start(), await Backend().start()
    slow_old = await Backend(slow).start()
    p = await Proxy(snapshot(
        [pool(1, [(1, "127.0.0.1", old.port)]), pool(2, [(2, "127.0.0.1", kept.port)]),
         pool(3, [(3, "127.0.0.1", slow_old.port)])],
        [route(1, ["a.test"], 1), route(2, ["k.test"], 2), route(3, ["s.test"], 3)])).start()
    try:
        assert (await get(p.port, host="a.test")).status == 200
        assert (await get(p.port, host="k.test")).status == 200
        in_flight = asyncio.ensure_future(get(p.port, host="s.test"))
        await wait_for(lambda: slow_old.requests, what="request on the slow target")
        idle_old = p.state.upstreams.pools[("127.0.0.1", old.port)].idle[0]
        p.state.apply(2, "h2", snapshot(
            [pool(2, [(2, "127.0.0.1", kept.port)]), pool(4, [(4, "127.0.0.1", new.port)])],
            [route(2, ["k.test"], 2), route(4, ["a.test"], 4)]))
        await wait_for(lambda: idle_old.closed, what="idle connection to the removed target closed")
        assert set(p.state.upstreams.pools) == {("127.0.0.1", kept.port), ("127.0.0.1", new.port)}
        release.set()  # a request already running on a removed target still completes
        res = await in_flight
        assert res.status == 200 and res.body == b"slow"
        assert not p.state.upstreams.pools.get(("127.0.0.1", slow_old.port))  # not pooled again
        assert (await get(p.port, host="k.test")).status == 200
        assert kept.connections == 1  # the unchanged target kept its warm connection
        assert (await get(p.port, host="a.test")).status == 200 and new.requests
    finally:
        await p.close()
        for b in (old, kept, new, slow_old):
            await b.close()


async def test_client_half_close_after_request_still_gets_the_response(env):
    async def slow(req, w):
        await asyncio.sleep(0.2)  # the FIN arrives before the answer
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    b, p = await env(slow)
    r, w = await asyncio.open_connection("127.0.0.1", p.port)
    w.write(b"GET /a HTTP/1.1\r\nHost: app.test\r\n\r\n")
    w.write_eof()  # like `nc -N` or a client that shuts down its sending side
    data = await asyncio.wait_for(r.read(), 5)  # read() to EOF: the proxy closes after it
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\nhello")
    assert b"connection: close" in data.lower()
    w.close()


async def test_client_half_close_inside_a_request_body_closes_without_forwarding(env):
    b, p = await env()
    r, w = await asyncio.open_connection("127.0.0.1", p.port)
    w.write(b"POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: 10\r\n\r\nabc")
    w.write_eof()
    data = await asyncio.wait_for(r.read(), 5)
    assert not data.startswith(b"HTTP/1.1 200")
    assert not b.requests  # the upstream never saw a complete request
    w.close()
