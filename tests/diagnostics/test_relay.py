"""The control-plane side: the real sync consumer relays diagnostics both ways."""
import asyncio
import json
import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from controlplane.asgi import application
from controlplane.diagnostics import relay, services, tail
from controlplane.diagnostics.models import CapturedRequest, CaptureSession
from controlplane.publishing.models import Node
from tests.controlplane.helpers import route
from tests.support import fresh_layer  # noqa: F401 - an autouse fixture

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(name="n1"):
    node, token = await database_sync_to_async(Node.register)(name)
    comm = WebsocketCommunicator(application, "/ws/dataplane/",
                                 headers=[(b"authorization", f"Bearer {token}".encode())])
    ok, _ = await comm.connect()
    assert ok
    await comm.send_json_to({"type": "hello", "version": None, "hash": None, "software": "sw/1",
                             "workers": 2, "started": time.time() - 100})
    return node, comm


async def recv(comm, kind, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        out = await comm.receive_output(max(0.01, deadline - time.monotonic()))
        if out.get("type") == "websocket.send" and out.get("text"):
            msg = json.loads(out["text"])
            if msg.get("type") == kind:
                return msg


async def wait_db(fn, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await database_sync_to_async(fn)()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_a_probe_goes_to_the_node_and_its_answer_comes_back():
    node, comm = await connect()
    await recv(comm, "health")  # hello handled
    ask = asyncio.ensure_future(relay.node_request(node.id, {"type": "probe", "id": "abc",
                                                             "url": "http://x.test/"}, 5))
    msg = await recv(comm, "probe")
    assert msg["url"] == "http://x.test/"
    await comm.send_json_to({"type": "probe.result", "id": "other", "result": {"ok": False}})
    await comm.send_json_to({"type": "probe.result", "id": "abc", "result": {"ok": True}})
    reply = await asyncio.wait_for(ask, 5)
    assert reply["result"] == {"ok": True}
    with pytest.raises(relay.NodeTimeout):
        await relay.node_request(node.id, {"type": "probe", "id": "silent", "url": "http://x/"}, 0.3)
    await comm.disconnect()


async def test_tail_lines_reach_the_viewer_filtered_and_stop_is_sent():
    node, comm = await connect()
    await recv(comm, "health")
    stream = tail.stream({"routes": [1]}, seconds=30)
    event, hello = await stream.__anext__()
    assert event == "hello"
    start = await recv(comm, "tail.start")
    assert start["filter"] == {"routes": [1]} and start["expires"] > time.time()
    await comm.send_json_to({"type": "tail.lines", "id": start["id"], "dropped": 3,
                             "lines": [{"route_id": 2, "path": "/other-tenant"},
                                       {"route_id": 1, "path": "/mine"}]})
    got = []
    while len(got) < 2:
        event, data = await asyncio.wait_for(stream.__anext__(), 5)
        if event != "keepalive":
            got.append((event, data))
    assert got[0] == ("dropped", {"node": "n1", "dropped": 3, "total": 3})
    assert got[1] == ("line", {"route_id": 1, "path": "/mine"})
    await stream.aclose()
    stop = await recv(comm, "tail.stop")
    assert stop["id"] == start["id"]
    await comm.disconnect()


async def test_capture_records_are_stored_for_their_session_only(settings):
    node, comm = await connect()
    await recv(comm, "health")
    r = await database_sync_to_async(route)("api")
    import datetime as dt

    from django.utils import timezone
    s = await database_sync_to_async(CaptureSession.objects.create)(
        route=r, count=1, expires=timezone.now() + dt.timedelta(minutes=5))
    rec = {"route_id": r.id, "session": s.id.hex, "client_request": {"headers": []}}
    await comm.send_json_to({"type": "capture.record", "id": s.id.hex, "record": rec})
    await comm.send_json_to({"type": "capture.record", "id": s.id.hex, "record": rec})  # over count
    await comm.send_json_to({"type": "capture.record", "id": s.id.hex,
                             "record": {**rec, "route_id": r.id + 100}})             # wrong route
    await wait_db(lambda: CapturedRequest.objects.filter(session=s).exists())
    await asyncio.sleep(0.3)
    assert await database_sync_to_async(CapturedRequest.objects.filter(session=s).count)() == 1
    await comm.disconnect()


async def test_node_status_reports_runtime_and_nack():
    node, comm = await connect()
    await recv(comm, "health")
    await comm.send_json_to({"type": "nack", "nonce": "n", "version": 7, "hash": "h" * 64,
                             "running_version": None, "running_hash": None,
                             "errors": [{"path": "routes[0].pool", "message": "unknown pool 99"}]})

    def rejected():
        n = Node.objects.get(pk=node.pk)
        return n if n.rejected_version == 7 else None
    n = await wait_db(rejected)
    status = await database_sync_to_async(services.node_status)(n)
    assert status["connected"] and status["workers"] == 2 and status["software_version"] == "sw/1"
    assert 90 < status["uptime_seconds"] < 200
    assert status["last_nack"]["errors"] == [{"path": "routes[0].pool", "message": "unknown pool 99"}]
    assert status["events"][0]["kind"] == "nack"
    await comm.disconnect()
