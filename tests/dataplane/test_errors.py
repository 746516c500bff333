"""Every generated error carries its status, Proxy-Status type and a request id."""
import asyncio
import json
import socket

import pytest

from dataplane import admin, schema
from dataplane.applier import NodeState
from tests.dataplane.helpers import Backend, Client, Proxy, get, pool, route, snapshot, refused_port


def assert_error(res, status: int, etype: str) -> None:
    assert res.status == status, (res.status, res.body)
    ps = res.one("Proxy-Status")
    assert ps.startswith("switchyard; error=" + etype + ";"), ps
    assert 'details="' in ps
    assert res.one("X-Request-ID")
    assert res.body


@pytest.fixture
async def proxies():
    made = []

    async def make(targets, log_path="off", **pool_kw):
        p = await Proxy(snapshot([pool(1, targets, **pool_kw)], [route(1, ["app.test"], 1)]),
                        log_path=log_path).start()
        made.append(p)
        return p
    yield make
    for p in made:
        await p.close()


async def test_refused(proxies):
    p = await proxies([(1, "127.0.0.1", refused_port())])
    assert_error(await get(p.port), 502, "connection_refused")


async def test_dns_error(proxies):
    p = await proxies([(1, "no-such-host.invalid", 80)])
    assert_error(await get(p.port), 502, "dns_error")


async def test_invalid_upstream_response(proxies):
    async def respond(req, w):
        w.write(b"NOT HTTP AT ALL\r\n\r\n")
    b = await Backend(respond).start()
    p = await proxies([(1, "127.0.0.1", b.port)])
    assert_error(await get(p.port), 502, "http_protocol_error")
    await b.close()


async def test_connect_timeout(proxies):
    # A loopback listener whose accept queue is full drops new SYNs: connect hangs.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(lsock.getsockname())
        fillers.append(c)
    try:
        p = await proxies([(1, "127.0.0.1", lsock.getsockname()[1])], connect_timeout=0.3)
        assert_error(await get(p.port), 504, "connection_timeout")
    finally:
        for c in fillers:
            c.close()
        lsock.close()


async def test_response_header_timeout(proxies):
    async def respond(req, w):
        await asyncio.sleep(3)
    b = await Backend(respond).start()
    p = await proxies([(1, "127.0.0.1", b.port)], read_timeout=0.3)
    assert_error(await get(p.port), 504, "http_response_timeout")
    await b.close()


async def test_no_healthy_target(proxies):
    b = await Backend().start()
    p = await proxies([(7, "127.0.0.1", b.port)])
    p.state.set_health({"7": False})
    assert_error(await get(p.port), 503, "destination_unavailable")
    p.state.set_health({7: True})
    assert (await get(p.port)).status == 200
    await b.close()


async def test_no_route(proxies):
    p = await proxies([(1, "127.0.0.1", 9)])
    assert_error(await get(p.port, host="nothing.test"), 404, "destination_not_found")


async def test_policy_prohibits_loopback(proxies):
    b = await Backend().start()
    p = await proxies([(1, "127.0.0.1", b.port)], policy={"restricted": True})
    assert_error(await get(p.port), 502, "destination_ip_prohibited")
    assert b.connections == 0
    await b.close()


async def test_retry_goes_to_another_target(proxies):
    b = await Backend().start()
    p = await proxies([(1, "127.0.0.1", refused_port()), (2, "127.0.0.1", b.port)], retries=1)
    statuses = [(await get(p.port)).status for _ in range(4)]
    assert statuses == [200] * 4
    # POST is not idempotent: never retried
    results = [(await get(p.port, method="POST", body=b"x")).status for _ in range(2)]
    assert sorted(results) == [200, 502]
    await b.close()


async def test_upstream_death_mid_response_aborts_client(proxies, tmp_path):
    async def respond(req, w):
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
        await w.drain()
        w.transport.abort()
    b = await Backend(respond).start()
    log = tmp_path / "access.log"
    p = await proxies([(1, "127.0.0.1", b.port)], log_path=str(log))
    c = await Client(p.port).connect()
    await c.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
    with pytest.raises(ConnectionError):
        await c.response()
    c.close()

    async def chunked(req, w):
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await w.drain()
        w.transport.abort()
    b.respond = chunked
    c = await Client(p.port).connect()
    await c.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
    with pytest.raises(ConnectionError):
        await c.response()
    c.close()
    p.log.flush()
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["proxy_status"] for x in lines] == ["http_response_incomplete"] * 2
    assert lines[0]["route"] == "route1" and lines[0]["request_id"]
    await b.close()


async def test_access_log_fields(proxies, tmp_path):
    b = await Backend().start()
    log = tmp_path / "a.log"
    p = await proxies([(1, "127.0.0.1", b.port)], log_path=str(log))
    await get(p.port, path="/x?y=1", headers=[("X-Request-ID", "rid-1")])
    p.log.flush()
    line = json.loads(log.read_text().splitlines()[-1])
    for key in ("time", "node", "route", "tenant", "method", "host", "path", "status",
                "proxy_status", "upstream_addr", "upstream_status", "duration",
                "upstream_connect_time", "upstream_first_byte_time", "bytes_in", "bytes_out",
                "client_addr", "request_id", "retries", "tls_version", "sni"):
        assert key in line, key
    assert line["status"] == 200 and line["request_id"] == "rid-1" and line["path"] == "/x"
    assert line["upstream_addr"] == f"127.0.0.1:{b.port}" and line["client_addr"] == "127.0.0.1"
    await b.close()


async def test_admin_endpoints_and_metrics():
    state = NodeState(node_name="t")
    runner, port = await admin.start(state, "127.0.0.1", 0)
    try:
        assert (await get(port, path="/healthz")).status == 200
        assert (await get(port, path="/readyz")).status == 503
        b = await Backend().start()
        state.apply(3, "h3", snapshot([pool(1, [(1, "127.0.0.1", b.port)])],
                                      [route(1, ["app.test"], 1, name="web")]))
        assert (await get(port, path="/readyz")).status == 200
        with pytest.raises(schema.SnapshotInvalid):
            state.apply(4, "h4", {"schema": 1, "routes": [{"bad": 1}]})
        assert state.version == 3
        p = Proxy(None)
        p.state = state
        await p.start()
        await get(p.port)
        await get(p.port, host="nope.test")
        text = (await get(port, path="/metrics")).body.decode()
        assert 'switchyard_requests_total{code_class="2xx",proxy_status="",route="web"} 1.0' in text
        assert ('switchyard_requests_total{code_class="4xx",proxy_status="destination_not_found",'
                'route="-"} 1.0') in text
        assert 'switchyard_request_duration_seconds_bucket{le="+Inf",route="web"} 1.0' in text
        assert "switchyard_upstream_duration_seconds_count" in text
        assert "switchyard_active_connections" in text
        assert "switchyard_config_version 3.0" in text
        assert 'switchyard_config_applies_total{result="ok"} 1.0' in text
        assert 'switchyard_config_applies_total{result="error"} 1.0' in text
        assert f'switchyard_target_healthy{{pool="pool1",target="127.0.0.1:{b.port}"}} 1.0' in text
        await p.close()
        await b.close()
    finally:
        await runner.cleanup()


def test_access_log_time_is_utc_with_milliseconds_and_never_goes_back():
    import datetime
    import time

    from dataplane.accesslog import _Clock
    clock = _Clock()
    last = None
    for _ in range(2000):
        before = time.time()
        stamp = clock.now()
        t = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        assert before - 0.002 <= t <= time.time() + 0.001, (stamp, before)
        assert last is None or stamp >= last
        last = stamp
