"""Load balancing, sticky sessions, outlier ejection and retries through a real proxy."""
import asyncio
import json

import pytest

from dataplane import exposition
from tests.dataplane.helpers import Backend, Client, Proxy, get, pool, route, snapshot, refused_port




class Resetter:
    """Accepts, reads a whole request head (and ``body`` bytes), then resets."""

    def __init__(self, body: int = 0):
        self.body = body
        self.requests = 0

    async def start(self) -> "Resetter":
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _conn(self, r, w):
        try:
            await r.readuntil(b"\r\n\r\n")
            if self.body:
                await r.readexactly(self.body)
            self.requests += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        w.transport.abort()

    async def close(self):
        self.server.close()


@pytest.fixture
async def made():
    things = []
    yield things
    for t in things:
        await t.close()


async def proxy(made, targets, log_path="off", **pool_kw):
    p = await Proxy(snapshot([pool(1, targets, **pool_kw)], [route(1, ["app.test"], 1)]),
                    log_path=log_path).start()
    made.append(p)
    return p


async def backend(made, body=b"ok", status=200):
    async def respond(req, w):
        w.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%b" % (status, len(body), body))
    b = await Backend(respond).start()
    made.append(b)
    return b


# ---------------------------------------------------------------- algorithms end to end

async def test_sticky_session_cookie_through_the_proxy(made):
    b1, b2 = await backend(made, b"one"), await backend(made, b"two")
    p = await proxy(made, [(1, "127.0.0.1", b1.port), (2, "127.0.0.1", b2.port)],
                    sticky_cookie="sy_route")
    first = await get(p.port)
    cookie = first.one("Set-Cookie")
    assert cookie.startswith("sy_route=") and "HttpOnly" in cookie
    value = cookie.split(";")[0]
    for _ in range(6):
        res = await get(p.port, headers=[("Cookie", value)])
        assert res.body == first.body and res.one("Set-Cookie") is None
    # the target goes away: fall back to the other one and re-set the cookie
    dead = 1 if first.body == b"one" else 2
    p.state.set_health({dead: False})
    res = await get(p.port, headers=[("Cookie", value)])
    assert res.status == 200 and res.body != first.body
    assert res.one("Set-Cookie").startswith("sy_route=") and res.one("Set-Cookie") != cookie


async def test_consistent_hash_on_header_through_the_proxy(made):
    bs = [await backend(made, b"%d" % i) for i in range(4)]
    p = await proxy(made, [(i + 1, "127.0.0.1", b.port) for i, b in enumerate(bs)],
                    algorithm="consistent_hash", hash_on="header", hash_key="X-User")
    for user in ("alice", "bob", "carol"):
        bodies = {(await get(p.port, headers=[("X-User", user)])).body for _ in range(5)}
        assert len(bodies) == 1


async def test_least_conn_avoids_the_busy_target(made):
    release = asyncio.Event()

    async def slow(req, w):
        await release.wait()
        w.write(b"HTTP/1.1 200 X\r\nContent-Length: 4\r\n\r\nslow")
    b1 = await Backend(slow).start()
    made.append(b1)
    b2 = await backend(made, b"fast")
    p = await proxy(made, [(1, "127.0.0.1", b1.port), (2, "127.0.0.1", b2.port)],
                    algorithm="least_conn")
    c = await Client(p.port).connect()
    await c.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")  # goes to target 1 and hangs
    deadline = asyncio.get_running_loop().time() + 5
    while not b1.requests:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert [(await get(p.port)).body for _ in range(5)] == [b"fast"] * 5
    release.set()
    assert (await c.response()).body == b"slow"
    c.close()


async def test_draining_target_finishes_in_flight_and_gets_nothing_new(made):
    release = asyncio.Event()

    async def slow(req, w):
        if req.url == b"/slow":
            await release.wait()
        w.write(b"HTTP/1.1 200 X\r\nContent-Length: 3\r\n\r\none")
    b1 = await Backend(slow).start()
    made.append(b1)
    b2 = await backend(made, b"two")
    targets = [(1, "127.0.0.1", b1.port), (2, "127.0.0.1", b2.port)]
    p = await proxy(made, targets)
    c = await Client(p.port).connect()
    await c.send(b"GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n")
    deadline = asyncio.get_running_loop().time() + 5
    while not b1.requests:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    snap = snapshot([pool(1, targets)], [route(1, ["app.test"], 1)])
    snap["pools"][0]["targets"][0]["state"] = "draining"
    p.state.apply(2, "h2", snap)
    assert [(await get(p.port)).body for _ in range(4)] == [b"two"] * 4
    release.set()
    res = await c.response()
    assert res.status == 200 and res.body == b"one"
    c.close()
    snap["pools"][0]["targets"][1]["state"] = "disabled"
    p.state.apply(3, "h3", snap)
    res = await get(p.port)
    assert res.status == 503 and "destination_unavailable" in res.one("Proxy-Status")


# ---------------------------------------------------------------- outlier ejection

async def test_consecutive_5xx_eject_the_target_and_metrics_show_it(made):
    bad = await backend(made, b"bad", status=503)
    good = await backend(made, b"good")
    p = await proxy(made, [(1, "127.0.0.1", bad.port), (2, "127.0.0.1", good.port)] +
                    [(i, "127.0.0.1", good.port) for i in range(3, 11)])  # 10 targets: 1 may go
    statuses = [(await get(p.port)).status for _ in range(60)]
    assert statuses.count(503) == 5  # five 5xx in a row, then ejected
    assert len(bad.requests) == 5
    ej = p.state.ejections()
    assert [e["target"] for e in ej] == [1] and ej[0]["pool"] == "pool1"
    text = exposition.render(exposition.registry(p.state.metrics)).decode()
    assert f'switchyard_target_healthy{{pool="pool1",target="127.0.0.1:{bad.port}"}} 0.0' in text
    assert f'switchyard_target_healthy{{pool="pool1",target="127.0.0.1:{good.port}"}} 1.0' in text
    # ejection survives a config apply
    p.state.apply(2, "h2", snapshot(
        [pool(1, [(1, "127.0.0.1", bad.port), (2, "127.0.0.1", good.port)] +
              [(i, "127.0.0.1", good.port) for i in range(3, 11)])], [route(1, ["app.test"], 1)]))
    assert [e["target"] for e in p.state.ejections()] == [1]
    assert [(await get(p.port)).status for _ in range(10)] == [200] * 10


async def test_connect_failures_eject_and_last_target_is_never_ejected(made):
    good = await backend(made)
    p = await proxy(made, [(1, "127.0.0.1", refused_port()), (2, "127.0.0.1", good.port)],
                    retries=1)
    # every request to the dead target is retried on the live one; after 5 the dead one
    # is ejected and requests stop trying it
    for _ in range(12):
        assert (await get(p.port)).status == 200
    assert [e["target"] for e in p.state.ejections()] == [1]
    # a single failing target is the last live one: never ejected, errors pass through
    p2 = await proxy(made, [(1, "127.0.0.1", refused_port())])
    for _ in range(7):
        assert (await get(p2.port)).status == 502
    assert p2.state.ejections() == []


async def test_pool_passive_settings_from_the_snapshot_are_used(made):
    bad = await backend(made, b"bad", status=503)
    good = await backend(made, b"good")
    targets = [(1, "127.0.0.1", bad.port)] + [(i, "127.0.0.1", good.port) for i in range(2, 11)]
    p = await proxy(made, targets, passive_failures=2, passive_ejection_seconds=7.0)
    statuses = [(await get(p.port)).status for _ in range(40)]
    assert statuses.count(503) == 2  # two 5xx in a row eject it, not the default five
    assert len(bad.requests) == 2
    ej = p.state.ejections()
    assert [e["target"] for e in ej] == [1]
    assert 6 < ej[0]["remaining_seconds"] <= 7.0
    # 0 turns passive ejection off for the pool: the failing target keeps its share
    p2 = await proxy(made, targets, passive_failures=0)
    statuses = [(await get(p2.port)).status for _ in range(40)]
    assert statuses.count(503) == 4 and p2.state.ejections() == []


def test_passive_settings_default_and_are_validated():
    from dataplane import schema
    snap = schema.parse_snapshot(snapshot([pool(1, [(1, "127.0.0.1", 80)])], []))
    assert (snap.pools[0].passive_failures, snap.pools[0].passive_ejection_seconds) == (5, 30.0)
    for bad in ({"passive_failures": -1}, {"passive_failures": 1001}, {"passive_failures": 2.5},
                {"passive_ejection_seconds": 0.5}, {"passive_ejection_seconds": 3601},
                {"passive_ejection_seconds": "30"}):
        with pytest.raises(schema.SnapshotInvalid) as exc:
            schema.parse_snapshot(snapshot([pool(1, [(1, "127.0.0.1", 80)], **bad)], []))
        assert f"pools[0].{next(iter(bad))}" in str(exc.value)


# ---------------------------------------------------------------- retries

def log_lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


async def test_refused_is_retried_on_another_target_idempotent_only(made, tmp_path):
    good = await backend(made)
    log = tmp_path / "a.log"
    p = await proxy(made, [(1, "127.0.0.1", refused_port()), (2, "127.0.0.1", good.port)],
                    log_path=str(log), retries=1)
    res = await get(p.port, method="PUT", body=b"data")  # idempotent, nothing was sent yet
    assert res.status == 200 and bytes(good.requests[-1].body) == b"data"
    res2 = await get(p.port)
    assert res2.status == 200
    results = [(await get(p.port, method="POST", body=b"x")).status for _ in range(2)]
    assert sorted(results) == [200, 502]  # the POST that met the dead target failed
    p.log.flush()
    lines = log_lines(log)
    assert [x["retries"] for x in lines if x["method"] == "PUT"] == [1]
    assert all(x["retries"] == 0 for x in lines if x["method"] == "POST")


async def test_retries_are_bounded_by_the_pool_setting(made):
    good = await backend(made)
    dead = [(i, "127.0.0.1", refused_port()) for i in (1, 2, 3)]
    p0 = await proxy(made, dead[:1] + [(4, "127.0.0.1", good.port)], retries=0)
    assert sorted([(await get(p0.port)).status for _ in range(2)]) == [200, 502]
    p1 = await proxy(made, dead + [(4, "127.0.0.1", good.port)], retries=1)
    res = await get(p1.port)  # round robin: dead 1, then dead 2 -> out of retries
    assert res.status == 502 and "connection_refused" in res.one("Proxy-Status")
    p3 = await proxy(made, dead + [(4, "127.0.0.1", good.port)], retries=3)
    assert (await get(p3.port)).status == 200  # dead 1, 2, 3 then the good one


async def test_request_written_then_reset_is_not_retried(made):
    rst = await Resetter().start()
    made.append(rst)
    good = await backend(made)
    p = await proxy(made, [(1, "127.0.0.1", rst.port), (2, "127.0.0.1", good.port)], retries=3)
    res = await get(p.port)  # the GET reached target 1: it was written, so no retry
    assert res.status == 502 and "connection_terminated" in res.one("Proxy-Status")
    assert rst.requests == 1 and good.requests == []


async def test_post_whose_body_started_is_never_retried(made):
    rst = await Resetter(body=5).start()
    made.append(rst)
    good = await backend(made)
    p = await proxy(made, [(1, "127.0.0.1", rst.port), (2, "127.0.0.1", good.port)], retries=3)
    res = await get(p.port, method="POST", body=b"hello")
    assert res.status == 502
    assert rst.requests == 1 and good.requests == []
    # the same for an idempotent PUT whose body was sent
    res = await get(p.port, method="PUT", body=b"hello")
    assert res.status in (200, 502)
    if res.status == 502:
        assert good.requests == []
