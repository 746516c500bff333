"""The data-plane side of config sync: ``SyncClient`` and the snapshot cache,
against a small aiohttp WebSocket server that plays the control plane."""
import asyncio
import json
import os
import stat

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dataplane import cache, schema
from dataplane.applier import NodeState
from dataplane.sync import SyncClient
from tests.support import wait_until_async as wait_until

TOKEN = "node_test-token"


def snapshot(n: int) -> dict:
    snap = schema.empty_snapshot()
    snap["pools"] = [{"id": 1, "name": "web", "tenant": None,
                      "targets": [{"id": 1, "host": "127.0.0.1", "port": 9000 + n}]}]
    snap["routes"] = [{"id": 1, "name": "demo", "tenant": None, "hosts": ["demo.localhost"], "pool": 1}]
    return snap


def invalid_snapshot() -> dict:
    snap = snapshot(1)
    snap["routes"][0]["pool"] = 99
    snap["routes"].append({"id": 2, "name": "bad", "tenant": None, "hosts": ["-bad-"], "pool": 1})
    return snap


class FakeControlPlane:
    """Accepts the node token, records every message, pushes on demand."""

    def __init__(self):
        self.refuse = 0          # refuse this many handshakes (403) first
        self.handshakes = 0
        self.hellos: list[dict] = []
        self.messages: asyncio.Queue = asyncio.Queue()
        self.ws: web.WebSocketResponse | None = None
        self.app = web.Application()
        self.app.router.add_get("/ws/dataplane/", self.handler)
        self.server = TestServer(self.app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self.server.make_url("/ws/dataplane/"))

    async def handler(self, request):
        self.handshakes += 1
        if request.headers.get("Authorization") != f"Bearer {TOKEN}" or self.refuse > 0:
            self.refuse = max(0, self.refuse - 1)
            return web.Response(status=403)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws = ws
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                if data.get("type") == "hello":
                    self.hellos.append(data)
                await self.messages.put(data)
        return ws

    async def push(self, version: int, snap: dict, digest: str | None = None, nonce: str = "") -> str:
        nonce = nonce or f"n{version}"
        await self.ws.send_bytes(schema.encode_push(
            version, digest or schema.snapshot_hash(snap), nonce, snap))
        return nonce

    async def next(self, kind: str, timeout: float = 5.0) -> dict:
        async def find():
            while True:
                msg = await self.messages.get()
                if msg.get("type") == kind:
                    return msg
        return await asyncio.wait_for(find(), timeout)

    async def drop(self):
        ws, self.ws = self.ws, None
        await ws.close()


@pytest.fixture
async def control_plane():
    cp = FakeControlPlane()
    await cp.server.start_server()
    yield cp
    await cp.server.close()


class Node:
    """A running SyncClient and its state, stopped at the end of the test."""

    def __init__(self, cp, tmp_path, state=None, **kwargs):
        self.state = state or NodeState()
        self.cache_dir = tmp_path / "cache"
        self.client = SyncClient(cp.url, kwargs.pop("token", TOKEN), self.state, self.cache_dir,
                                 "edge-1", workers=2, **kwargs)
        self.task = None

    def start(self):
        self.task = asyncio.create_task(self.client.run())
        return self

    async def stop(self):
        await self.client.close()
        await asyncio.wait_for(self.task, 5)


@pytest.fixture
async def nodes(control_plane, tmp_path):
    started = []

    def make(**kwargs):
        node = Node(control_plane, tmp_path, **kwargs)
        started.append(node)
        return node
    yield make
    for node in started:
        if node.task is not None and not node.task.done():
            await node.stop()


async def test_it_says_hello_and_applies_a_push_then_acks_and_writes_the_cache(control_plane, nodes):
    node = nodes().start()
    hello = await control_plane.next("hello")
    assert isinstance(hello.pop("started"), float)  # process start time (node uptime)
    assert hello == {"type": "hello", "version": None, "hash": None,
                     "software": node.client.software, "workers": 2}
    nonce = await control_plane.push(1, snapshot(1))
    ack = await control_plane.next("ack")
    assert ack["nonce"] == nonce and ack["version"] == 1
    assert ack["hash"] == schema.snapshot_hash(snapshot(1))
    assert isinstance(ack["apply_ms"], float) and ack["apply_ms"] >= 0
    assert (node.state.version, node.state.hash) == (1, ack["hash"])
    assert cache.load(node.cache_dir) == (1, ack["hash"], snapshot(1))
    path = cache.cache_path(node.cache_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(node.cache_dir) == [cache.CACHE_FILE]  # no temp file left behind


async def test_it_nacks_an_invalid_snapshot_with_structured_errors_and_keeps_running(control_plane, nodes):
    node = nodes().start()
    await control_plane.next("hello")
    await control_plane.push(1, snapshot(1))
    await control_plane.next("ack")
    nonce = await control_plane.push(2, invalid_snapshot())
    nack = await control_plane.next("nack")
    good = schema.snapshot_hash(snapshot(1))
    assert nack["nonce"] == nonce and nack["version"] == 2
    assert nack["hash"] == schema.snapshot_hash(invalid_snapshot())
    assert (nack["running_version"], nack["running_hash"]) == (1, good)
    paths = {e["path"] for e in nack["errors"]}
    assert "routes[1].hosts[0]" in paths
    assert all(set(e) == {"path", "message"} for e in nack["errors"])
    assert (node.state.version, node.state.hash) == (1, good)
    assert cache.load(node.cache_dir)[0] == 1


async def test_it_nacks_a_push_whose_hash_does_not_match_its_snapshot(control_plane, nodes):
    node = nodes().start()
    await control_plane.next("hello")
    await control_plane.push(1, snapshot(1), digest="0" * 64)
    nack = await control_plane.next("nack")
    assert nack["errors"][0]["path"] == "hash"
    assert (nack["running_version"], nack["running_hash"]) == (None, None)
    assert node.state.version is None
    assert cache.load(node.cache_dir) is None


async def test_it_applies_only_the_newest_of_pushes_that_arrive_during_an_apply(control_plane, nodes):
    class GatedState(NodeState):
        def __init__(self):
            super().__init__()
            self.gate = asyncio.Event()
            self.started = asyncio.Event()
            self.applied = []

        async def apply(self, version, digest, snap):
            self.started.set()
            await self.gate.wait()
            self.applied.append(version)
            return super().apply(version, digest, snap)

    node = nodes(state=GatedState()).start()
    await control_plane.next("hello")
    await control_plane.push(1, snapshot(1))
    await asyncio.wait_for(node.state.started.wait(), 5)
    for n in (2, 3, 4):
        await control_plane.push(n, snapshot(n))
    await wait_until(lambda: node.client.stats["pushes"] == 4, what="all pushes received")
    node.state.gate.set()
    assert (await control_plane.next("ack"))["version"] == 1
    assert (await control_plane.next("ack"))["version"] == 4
    assert node.state.applied == [1, 4]
    assert node.state.version == 4
    assert cache.load(node.cache_dir)[0] == 4


async def test_it_reconnects_after_the_server_drops_and_says_hello_with_what_it_runs(control_plane, nodes):
    node = nodes().start()
    await control_plane.next("hello")
    await control_plane.push(1, snapshot(1))
    await control_plane.next("ack")
    await control_plane.drop()
    hello = await control_plane.next("hello", timeout=10)
    assert (hello["version"], hello["hash"]) == (1, schema.snapshot_hash(snapshot(1)))
    assert node.client.stats["connects"] == 2
    assert node.state.version == 1  # served throughout


async def test_it_backs_off_exponentially_with_jitter_and_resets_after_a_connection(control_plane, nodes):
    pauses = []

    class RecordingClient(SyncClient):
        async def _sleep(self, seconds):
            pauses.append(seconds)
            await asyncio.sleep(0)

    node = nodes()
    node.client.__class__ = RecordingClient
    control_plane.refuse = 10
    node.start()
    await control_plane.next("hello", timeout=10)
    ceilings = [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30]
    assert len(pauses) == 10
    for pause, ceiling in zip(pauses, ceilings):
        assert max(0.5, ceiling / 2) <= pause <= ceiling, (pauses, ceilings)
    assert len(set(pauses[6:])) > 1, "no jitter at the cap"
    await control_plane.drop()
    await control_plane.next("hello", timeout=10)
    assert pauses[10] == 0.5  # a successful connection reset the backoff


async def test_it_keeps_retrying_a_control_plane_that_is_down(tmp_path):
    state = NodeState()
    client = SyncClient("ws://127.0.0.1:9/ws/dataplane/", TOKEN, state, tmp_path, "edge-1",
                        backoff_min=0.01, backoff_max=0.02)
    task = asyncio.create_task(client.run())
    await wait_until(lambda: client.stats["connect_failures"] >= 3, what="retries")
    assert not task.done()
    await client.close()
    await asyncio.wait_for(task, 5)


async def test_it_says_hello_with_the_cached_version_after_a_restart(control_plane, nodes, tmp_path):
    digest = schema.snapshot_hash(snapshot(3))
    cache.save(tmp_path / "cache", 3, digest, snapshot(3))
    node = nodes().start()
    hello = await control_plane.next("hello")
    assert (hello["version"], hello["hash"]) == (3, digest)
    assert node.state.ready


async def test_it_sends_heartbeats_with_version_and_hash(control_plane, nodes):
    nodes(heartbeat_seconds=0.05).start()
    await control_plane.next("hello")
    await control_plane.push(1, snapshot(1))
    await control_plane.next("ack")
    beat = await control_plane.next("heartbeat")
    while beat["version"] is None:  # one may have left before the apply
        beat = await control_plane.next("heartbeat")
    assert beat == {"type": "heartbeat", "version": 1, "hash": schema.snapshot_hash(snapshot(1))}


async def test_it_hands_health_messages_to_the_state(control_plane, nodes):
    node = nodes().start()
    await control_plane.next("hello")
    await control_plane.ws.send_str(json.dumps({"type": "health", "targets": {"7": False, "8": True}}))
    await wait_until(lambda: node.state.health == {7: False, 8: True}, what="health applied")


async def test_it_stops_on_close(control_plane, nodes):
    node = nodes().start()
    await control_plane.next("hello")
    await node.stop()
    assert node.task.done() and not node.client.connected


# ---------------------------------------------------------------- cache

def test_it_loads_nothing_from_a_missing_or_corrupt_cache(tmp_path, caplog):
    assert cache.load(tmp_path) is None
    path = cache.cache_path(tmp_path)
    for body in (b"{not json", b"[]", b'{"version": 1}',
                 json.dumps({"version": 1, "hash": "0" * 64, "snapshot": snapshot(1)}).encode()):
        path.write_bytes(body)
        assert cache.load(tmp_path) is None, body
    assert "corrupt" in caplog.text


def test_it_leaves_the_old_cache_intact_when_a_write_fails(tmp_path, monkeypatch):
    digest = schema.snapshot_hash(snapshot(1))
    cache.save(tmp_path, 1, digest, snapshot(1))

    def broken_fsync(fd):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        cache.save(tmp_path, 2, schema.snapshot_hash(snapshot(2)), snapshot(2))
    monkeypatch.undo()
    assert cache.load(tmp_path) == (1, digest, snapshot(1))
    assert os.listdir(tmp_path) == [cache.CACHE_FILE]
