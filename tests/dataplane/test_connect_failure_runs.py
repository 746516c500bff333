"""Issue 15, passive evidence: a run of connect failures on a target, counted by a real
proxy (``tests.dataplane.helpers.Proxy``) in the outlier records and reported with the
node's traffic by the real ``SyncClient``."""
import asyncio
import time

from dataplane import schema
from dataplane.sync import current_failing
from tests.dataplane.helpers import Proxy, get, pool, refused_port, route, snapshot
from tests.support import free_port


async def start(things, targets, **pool_kw):
    p = await Proxy(snapshot([pool(1, targets, **pool_kw)], [route(1, ["app.test"], 1)]), log_path="off").start()
    things.append(p)
    return p


async def test_a_run_of_refused_connects_is_counted_and_reported():
    things = []
    try:
        p = await start(things, [(1, "127.0.0.1", refused_port())], retries=0)
        for _ in range(2):
            assert (await get(p.port)).status == 502
        assert p.state.outlier.failing() == []  # two in a row: not yet a run worth reporting
        before = time.time()
        for _ in range(29):
            assert (await get(p.port)).status == 502
        [run] = p.state.outlier.failing()
        assert (run["target"], run["count"], run["code"]) == (1, 31, "connection_refused")
        # "since" is the run's first failure, sent rounded to 0.1 s
        assert before - 60 < run["since"] <= time.time() + 0.1
        # what the node sends: validated by the control plane's own parser
        failing = current_failing(p.state)
        msg = schema.parse_stats({"type": schema.MSG_STATS, "routes": {}, "failing": failing})
        assert [(f.target_id, f.count, f.code) for f in msg.failing] == [(1, 31, "connection_refused")]
    finally:
        for t in things:
            await t.close()


async def test_a_successful_connect_ends_the_run():
    things = []
    server = None
    try:
        port = free_port()  # nothing listens yet: connects are refused
        p = await start(things, [(1, "127.0.0.1", port)], retries=0)
        for _ in range(4):
            assert (await get(p.port)).status == 502
        assert [r["count"] for r in p.state.outlier.failing()] == [4]

        async def respond(r, w):
            await r.readuntil(b"\r\n\r\n")
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()
            w.close()
        server = await asyncio.start_server(respond, "127.0.0.1", port)
        assert (await get(p.port)).status == 200
        assert p.state.outlier.failing() == []
    finally:
        if server is not None:
            server.close()
        for t in things:
            await t.close()
