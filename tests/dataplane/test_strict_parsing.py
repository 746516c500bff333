"""Strict request parsing and limits, byte for byte over a raw socket.

Every rejected request must get its status, close the connection, and leave the
upstream with NOTHING: no connection, not one byte.
"""
import asyncio

import httptools
import pytest

from tests.dataplane.helpers import Client, Proxy, pool, route, snapshot


class RawBackend:
    """Records every byte it receives; answers each complete request with 200 ok."""

    def __init__(self):
        self.raw = bytearray()
        self.connections = 0
        self.requests = []

    async def start(self):
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _conn(self, r, w):
        self.connections += 1
        backend = self
        done = []

        class P:
            def on_message_begin(self):
                self.head = []

            def on_url(self, url):
                self.url = url

            def on_header(self, k, v):
                self.head.append((k.lower(), v))

            def on_message_complete(self):
                backend.requests.append((self.url, self.head))
                done.append(1)
        parser = httptools.HttpRequestParser(P())
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    return
                self.raw += data
                parser.feed_data(data)
                while done:
                    done.pop()
                    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (ConnectionError, httptools.HttpParserError):
            pass
        finally:
            w.close()

    def header(self, i, name):
        return [v for k, v in self.requests[i][1] if k == name.lower().encode()]

    async def close(self):
        self.server.close()


@pytest.fixture
async def env():
    b = await RawBackend().start()
    p = await Proxy(snapshot([pool(1, [(1, "127.0.0.1", b.port)])],
                             [route(1, ["app.test"], 1, max_body_size=100)])).start()
    stop = asyncio.Event()

    async def sweeper():  # what the node's ticker does once a second
        while not stop.is_set():
            p.server.sweep()
            await asyncio.sleep(0.05)
    task = asyncio.ensure_future(sweeper())
    yield b, p
    stop.set()
    await task
    await p.close()
    await b.close()


async def exchange(p, raw: bytes):
    c = await Client(p.port).connect()
    await c.send(raw)
    return c, await c.response()


async def assert_rejected(env, raw: bytes, status: int = 400):
    b, p = env
    c, res = await exchange(p, raw)
    assert res.status == status, (res.status, res.body)
    assert "error=http_request_error" in res.one("Proxy-Status")
    assert res.one("Connection") == "close"
    assert await c.closed()
    c.close()
    assert b.connections == 0 and bytes(b.raw) == b"", bytes(b.raw)


H = b"Host: app.test\r\n"

REJECTED = {
    # framing
    "cl+te": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te+cl": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    "dup-cl-same": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "dup-cl-diff": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "cl-list": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3, 3\r\n\r\nabc",
    "cl-plus": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc",
    "cl-negative": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
    "cl-hex": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x3\r\n\r\nabc",
    "cl-space-inside": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1 2\r\n\r\nabc",
    "cl-empty": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: \r\n\r\n",
    "cl-huge": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n",
    "te-xchunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te-chunked-twice": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "te-two-lines": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-gzip-chunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te-not-chunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nabc",
    "te-identity": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\nabc",
    "te-http10": b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te-space-before-colon": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "te-vtab": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
    # chunk sizes
    "chunk-not-hex": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
    "chunk-negative": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n-2\r\nab\r\n0\r\n\r\n",
    "chunk-0x": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n",
    "chunk-overflow": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nab\r\n0\r\n\r\n",
    "chunk-size-space": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2 2\r\nab\r\n0\r\n\r\n",
    "chunk-data-too-long": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
    "chunk-bare-lf": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2\nab\r\n0\r\n\r\n",
    # line syntax
    "obs-fold": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n folded\r\n\r\n",
    "obs-fold-tab": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n\tfolded\r\n\r\n",
    "bare-lf-all": b"GET / HTTP/1.1\nHost: app.test\n\n",
    "bare-lf-request-line": b"GET / HTTP/1.1\nHost: app.test\r\n\r\n",
    "bare-lf-header": b"GET / HTTP/1.1\r\nHost: app.test\nX-A: b\r\n\r\n",
    "bare-lf-end": b"GET / HTTP/1.1\r\nHost: app.test\r\n\n",
    "bare-cr-in-value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    "ctl-in-value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n",
    "del-in-value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n",
    "nul-in-name": b"GET / HTTP/1.1\r\n" + H + b"X-\x00A: b\r\n\r\n",
    "space-in-name": b"GET / HTTP/1.1\r\n" + H + b"X A: b\r\n\r\n",
    "ctl-in-host": b"GET / HTTP/1.1\r\nHost: app\x01.test\r\n\r\n",
    "space-in-url": b"GET /a b HTTP/1.1\r\n" + H + b"\r\n",
    "bad-version": b"GET / HTTP/1.2x\r\n" + H + b"\r\n",
    "h2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    # Host
    "no-host": b"GET / HTTP/1.1\r\n\r\n",
    "dup-host": b"GET / HTTP/1.1\r\n" + H + H + b"\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\n" + H + b"Host: other.test\r\n\r\n",
    "absolute-form-other-host": b"GET http://other.test/ HTTP/1.1\r\n" + H + b"\r\n",
    "absolute-form-other-port": b"GET http://app.test:81/ HTTP/1.1\r\n" + H + b"\r\n",
}


@pytest.mark.parametrize("raw", REJECTED.values(), ids=REJECTED.keys())
async def test_malformed_requests_get_400_and_reach_no_upstream(env, raw):
    await assert_rejected(env, raw)


async def test_valid_variants_still_pass(env):
    b, p = env
    ok = [
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length:  3 \r\n\r\nabc",
        b"GET http://app.test/x HTTP/1.1\r\nHost: APP.test\r\n\r\n",
        b"GET http://app.test:80/x HTTP/1.1\r\nHost: app.test:80\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + H + b"X-A: caf\xc3\xa9\r\n\r\n",
    ]
    for raw in ok:
        c, res = await exchange(p, raw)
        assert res.status == 200, raw
        c.close()
    assert len(b.requests) == len(ok)


async def test_stray_byte_after_content_length_0_is_not_smuggled(env):
    b, p = env
    c = await Client(p.port).connect()
    await c.send(b"GET / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\nX")
    # "X" can start no method: the complete request still gets its own response, then
    # the 400 of what follows, then the connection closes; "X" never goes upstream
    assert (await c.response()).status == 200
    assert (await c.response()).status == 400
    assert await c.closed()
    c.close()
    assert len(b.requests) == 1
    assert bytes(b.raw).endswith(b"Content-Length: 0\r\n\r\n")


async def test_stray_prefix_after_content_length_0_stays_with_the_client(env):
    b, p = env
    c = await Client(p.port).connect()
    await c.send(b"GET / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\nG")
    res = await c.response()
    assert res.status == 200
    assert len(b.requests) == 1
    raw = bytes(b.raw)
    assert raw.endswith(b"\r\n\r\n") and raw.count(b" HTTP/1.1\r\n") == 1  # no "G" upstream
    # the byte was the start of the client's next request, framed on its own
    await c.send(b"ET /next HTTP/1.1\r\n" + H + b"\r\n")
    assert (await c.response()).status == 200
    c.close()
    assert [u for u, _ in b.requests] == [b"/", b"/next"]
    assert bytes(b.raw).count(b"GET /next HTTP/1.1\r\n") == 1


async def test_body_of_a_get_cannot_smuggle_a_second_request(env):
    b, p = env
    inner = b"GET /admin HTTP/1.1\r\n" + H + b"\r\n"
    c, res = await exchange(p, b"GET / HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n%b"
                            % (len(inner), inner))
    assert res.status == 200
    await c.send(b"GET /next HTTP/1.1\r\n" + H + b"\r\n")
    assert (await c.response()).status == 200
    c.close()
    assert [u for u, _ in b.requests] == [b"/", b"/next"]  # /admin stayed a body


async def test_connection_header_cannot_strip_proxy_headers(env):
    b, p = env
    c, res = await exchange(p, b"GET / HTTP/1.1\r\n" + H + b"X-Forwarded-For: 6.6.6.6\r\n"
                            b"Connection: close, X-Forwarded-For, X-Real-IP, Via, X-Request-ID, "
                            b"X-Forwarded-Proto, Host\r\n\r\n")
    assert res.status == 200
    c.close()
    assert b.header(0, "X-Forwarded-For") == [b"127.0.0.1"]
    assert b.header(0, "X-Real-IP") == [b"127.0.0.1"]
    assert b.header(0, "X-Forwarded-Proto") == [b"http"]
    assert b.header(0, "Via") == [b"1.1 switchyard"]
    assert len(b.header(0, "X-Request-ID")) == 1
    assert b.header(0, "Host") == [b"app.test"]
    assert b.header(0, "Connection") == []


async def test_h2c_upgrade_is_never_passed_through(env):
    b, p = env
    c, res = await exchange(p, b"GET / HTTP/1.1\r\n" + H + b"Connection: Upgrade, HTTP2-Settings\r\n"
                            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
    assert res.status != 101
    c.close()
    raw = bytes(b.raw).lower()
    assert b"upgrade" not in raw and b"h2c" not in raw and b"http2-settings" not in raw


# ---------------------------------------------------------------- limits

async def test_request_line_over_8k_is_414(env):
    await assert_rejected(env, b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\n" + H + b"\r\n", 414)


async def test_one_header_over_8k_is_431(env):
    await assert_rejected(env, b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 8200 + b"\r\n\r\n", 431)


async def test_all_headers_over_32k_is_431(env):
    heads = b"".join(b"X-H%d: %b\r\n" % (i, b"a" * 7000) for i in range(5))  # each < 8 KiB
    await assert_rejected(env, b"GET / HTTP/1.1\r\n" + H + heads + b"\r\n", 431)


async def test_more_than_100_headers_is_431_and_100_pass(env):
    b, p = env
    ok = b"".join(b"X-H%d: v\r\n" % i for i in range(99))  # + Host = 100
    c, res = await exchange(p, b"GET / HTTP/1.1\r\n" + H + ok + b"\r\n")
    assert res.status == 200
    c.close()
    b.raw.clear()
    too_many = b"".join(b"X-H%d: v\r\n" % i for i in range(100))
    c, res = await exchange(p, b"GET / HTTP/1.1\r\n" + H + too_many + b"\r\n")
    assert res.status == 431
    assert await c.closed()
    c.close()
    assert bytes(b.raw) == b""


async def test_declared_body_over_limit_is_413_before_connecting(env):
    await assert_rejected(env, b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 101\r\n\r\n", 413)


async def test_streamed_body_over_limit_is_413_while_streaming(env):
    b, p = env
    c = await Client(p.port).connect()
    await c.send(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + b"32\r\n" + b"a" * 50 + b"\r\n")
    await asyncio.sleep(0)  # (no synchronisation needed: the limit is not reached yet)
    await c.send(b"40\r\n" + b"b" * 64 + b"\r\n")
    res = await c.response()
    assert res.status == 413
    assert await c.closed()
    c.close()
    assert b.requests == []  # the upstream never saw a complete request


async def test_slow_headers_are_cut_at_the_deadline(env):
    b, p = env
    p.server.header_timeout = 1.0
    c = await Client(p.port).connect()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await c.send(b"GET / HTTP/1.1\r\nHost: app.te")

    async def trickle():  # a byte every 0.2 s keeps the socket busy but never ends the head
        try:
            for _ in range(50):
                await c.send(b"x")
                await asyncio.sleep(0.2)
        except ConnectionError:
            pass
    task = asyncio.ensure_future(trickle())
    assert await c.closed(timeout=5)
    elapsed = loop.time() - t0
    task.cancel()
    c.close()
    assert 0.9 < elapsed < 3.0, elapsed
    assert b.connections == 0


async def test_idle_connection_is_closed_after_the_keepalive_timeout(env):
    b, p = env
    p.server.keepalive_timeout = 1.0
    p.server.header_timeout = 1.0
    c = await Client(p.port).connect()
    loop = asyncio.get_running_loop()
    assert (await c.request()).status == 200
    t0 = loop.time()
    assert await c.closed(timeout=5)
    assert 0.9 < loop.time() - t0 < 3.0
    c.close()
    # a connection that never sends anything is closed at the header deadline
    c = await Client(p.port).connect()
    t0 = loop.time()
    assert await c.closed(timeout=5)
    assert 0.9 < loop.time() - t0 < 3.0
    c.close()


async def test_concurrent_client_connection_cap(env):
    b, p = env
    p.server.max_connections = 2
    c1 = await Client(p.port).connect()
    c2 = await Client(p.port).connect()
    assert (await c1.request()).status == 200
    assert (await c2.request()).status == 200
    c3 = await Client(p.port).connect()
    assert await c3.closed(timeout=5)  # over the cap: closed without a word
    c3.close()
    assert p.server.refused_connections == 1
    c1.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while len(p.server.connections) > 1:
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    c4 = await Client(p.port).connect()
    assert (await c4.request()).status == 200
    c4.close()
    c2.close()
