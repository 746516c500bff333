"""`python -m dataplane` as a subprocess: streaming with bounded memory, drain on SIGTERM."""
import asyncio
import signal


from tests.dataplane.helpers import Backend, NodeProcess, get, pool, route, snapshot, wait_for

SIZE = 100 * 1024 * 1024
CHUNK = 1024 * 1024
MAX_GROWTH_KB = 30 * 1024  # far below the 100 MB that buffering would cost


class RssWatch:
    def __init__(self, node: NodeProcess):
        self.node = node
        self.base = node.rss_kb()
        self.peak = self.base

    async def run(self):
        while True:
            self.peak = max(self.peak, self.node.rss_kb())
            await asyncio.sleep(0.02)


async def start(tmp_path, backend):
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)], read_timeout=60)],
                    [route(1, ["app.test"], 1, max_body_size=0)])
    node = await NodeProcess(tmp_path, snap).ready()
    assert (await get(node.port)).status == 200  # warm: imports, first connection
    return node


async def test_100mb_request_body_streams_with_bounded_memory(tmp_path):
    b = await Backend(keep_body=False, read_delay=0.0005).start()
    node = await start(tmp_path, b)
    watch = RssWatch(node)
    task = asyncio.ensure_future(watch.run())
    try:
        r, w = await asyncio.open_connection("127.0.0.1", node.port)
        w.write(b"PUT /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % SIZE)
        piece = b"u" * CHUNK
        for _ in range(SIZE // CHUNK):
            w.write(piece)
            await w.drain()
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 200")
        w.close()
    finally:
        task.cancel()
        node.stop()
        await b.close()
    assert b.requests[-1].body_len == SIZE
    assert watch.peak - watch.base < MAX_GROWTH_KB, (watch.base, watch.peak)


async def test_100mb_response_body_streams_with_bounded_memory(tmp_path):
    async def respond(req, w):
        if req.url != b"/big":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % SIZE)
        piece = b"d" * CHUNK
        for _ in range(SIZE // CHUNK):
            w.write(piece)
            await w.drain()
    b = await Backend(respond).start()
    node = await start(tmp_path, b)
    watch = RssWatch(node)
    task = asyncio.ensure_future(watch.run())
    try:
        r, w = await asyncio.open_connection("127.0.0.1", node.port, limit=CHUNK)
        w.write(b"GET /big HTTP/1.1\r\nHost: app.test\r\n\r\n")
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % SIZE in head
        got = 0
        while got < SIZE:
            data = await asyncio.wait_for(r.read(CHUNK), 30)
            assert data, "connection closed early"
            got += len(data)
            if got < SIZE // 2:
                await asyncio.sleep(0.0005)  # a slowish reader: backpressure must hold
        assert got == SIZE
        w.close()
    finally:
        task.cancel()
        node.stop()
        await b.close()
    assert watch.peak - watch.base < MAX_GROWTH_KB, (watch.base, watch.peak)


async def test_sigterm_drains_in_flight_request(tmp_path):
    release = asyncio.Event()

    async def respond(req, w):
        if req.url == b"/slow":
            await release.wait()
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
    b = await Backend(respond).start()
    node = await start(tmp_path, b)
    try:
        r, w = await asyncio.open_connection("127.0.0.1", node.port)
        w.write(b"GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n")
        await wait_for(lambda: any(x.url == b"/slow" for x in b.requests), what="slow request")
        node.proc.send_signal(signal.SIGTERM)
        # the listener closes while the request is still in flight
        async def refused():
            try:
                _, w2 = await asyncio.open_connection("127.0.0.1", node.port)
                w2.close()
                return False
            except OSError:
                return True
        deadline = asyncio.get_running_loop().time() + 5
        while not await refused():
            assert asyncio.get_running_loop().time() < deadline, "still accepting"
            await asyncio.sleep(0.02)
        assert node.proc.poll() is None
        release.set()
        data = await asyncio.wait_for(r.read(), 10)
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"done")
        assert await asyncio.get_running_loop().run_in_executor(None, node.proc.wait, 10) == 0
    finally:
        node.stop()
        await b.close()


def test_help_and_c_parser_check():
    import subprocess
    import sys

    from dataplane.node import require_c_parser
    require_c_parser()  # raises SystemExit when httptools is the pure-Python fallback
    out = subprocess.run([sys.executable, "-m", "dataplane", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for flag in ("--name", "--http", "--https", "--admin", "--control-plane", "--token",
                 "--token-file", "--cache-dir", "--trusted-proxies", "--access-log", "--snapshot"):
        assert flag in out
    assert "--default-certificate-name" in out
