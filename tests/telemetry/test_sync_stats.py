"""The node's traffic reports: the real SyncClient against a small aiohttp WebSocket
server that plays the control plane."""
import asyncio
import json
import time

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dataplane import schema
from dataplane.applier import NodeState
from dataplane.outlier import OutlierDetector
from dataplane.sync import SyncClient

TOKEN = "node_test-token"


class FakeControlPlane:
    def __init__(self):
        self.messages: asyncio.Queue = asyncio.Queue()
        self.app = web.Application()
        self.app.router.add_get("/ws/dataplane/", self.handler)
        self.server = TestServer(self.app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self.server.make_url("/ws/dataplane/"))

    async def handler(self, request):
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=403)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await self.messages.put(json.loads(msg.data))
        return ws

    async def next(self, kind: str, timeout=5.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            msg = await asyncio.wait_for(self.messages.get(), max(0.01, deadline - time.monotonic()))
            if msg.get("type") == kind:
                return msg


@pytest.fixture
async def control_plane():
    cp = FakeControlPlane()
    await cp.server.start_server()
    yield cp
    await cp.server.close()


@pytest.fixture
async def node(control_plane, tmp_path):
    state = NodeState(node_name="edge-1")
    client = SyncClient(control_plane.url, TOKEN, state, tmp_path, "edge-1",
                        heartbeat_seconds=30, stats_seconds=0.1)
    task = asyncio.create_task(client.run())
    await control_plane.next("hello")
    yield state, client
    await client.close()
    await asyncio.wait_for(task, 5)


async def test_it_sends_the_traffic_deltas_of_each_route(control_plane, node):
    state, client = node
    api = state.metrics.route("api", 11)
    api.observe(200, "", 0.004, 0.002, bytes_in=120, bytes_out=2048)
    api.observe(502, "connection_refused", 0.03, None, bytes_in=80)
    state.metrics.route("web", 12).observe(304, "", 0.001, 0.001)

    msg = await control_plane.next(schema.MSG_STATS)
    report = schema.parse_stats(msg)  # what the node sends passes the control plane's checks
    assert 0 < report.interval < 5
    assert set(msg["routes"]) == {"11", "12"}
    r = msg["routes"]["11"]
    assert r["requests"] == 2
    assert r["by_status"] == {"2xx": 1, "5xx": 1}
    assert r["by_proxy_status"] == {"connection_refused": 1}
    assert sum(r["latency_buckets"]) == 2 and sum(r["upstream_latency_buckets"]) == 1
    assert (r["bytes_in"], r["bytes_out"]) == (200, 2048)
    assert msg["ejections"] == []

    # Idle for several report intervals: no report is sent, so the next message is
    # the one with the new traffic, and it holds only the new request.
    await asyncio.sleep(0.35)
    api.observe(200, "", 0.004, 0.002)
    msg = await control_plane.next(schema.MSG_STATS)
    assert msg["routes"] == {"11": msg["routes"]["11"]}
    assert msg["routes"]["11"]["requests"] == 1
    assert client.stats["reports"] == 2


async def test_it_reports_the_targets_ejected_by_passive_health(control_plane, node):
    state, _ = node
    detector = OutlierDetector()
    detector.record_for(5).until = time.monotonic() + 30
    detector.record_for(6)  # not ejected
    state.outlier = detector

    msg = await control_plane.next(schema.MSG_STATS)  # sent without traffic: ejections changed
    assert msg["routes"] == {}
    assert [e["target_id"] for e in msg["ejections"]] == [5]
    assert abs(msg["ejections"][0]["until"] - (time.time() + 30)) < 2

    detector.record_for(5).until = 0.0  # the ejection ended: one more report says so
    msg = await control_plane.next(schema.MSG_STATS)
    assert msg["ejections"] == []


async def test_it_splits_a_report_of_many_routes(control_plane, node):
    state, client = node
    count = schema.MAX_STATS_ROUTES * 2 + 5
    for rid in range(1, count + 1):
        state.metrics.route(f"r{rid}", rid).observe(200, "", 0.001, 0.001)
    seen = set()
    while len(seen) < count:
        msg = await control_plane.next(schema.MSG_STATS)
        assert len(msg["routes"]) <= schema.MAX_STATS_ROUTES
        seen.update(msg["routes"])
    assert len(seen) == count
