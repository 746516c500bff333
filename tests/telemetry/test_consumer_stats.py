"""The sync consumer stores a node's traffic reports (schema.MSG_STATS)."""
import json
import time

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from controlplane.asgi import application
from controlplane.publishing import notify
from controlplane.publishing.models import Node
from controlplane.telemetry.models import TargetEjection, TrafficMinute
from dataplane import schema
from tests.support import fresh_layer, wait_until_async as wait_until  # noqa: F401 - fresh_layer is autouse

from .helpers import histogram, route_entry, stats, world

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(token):
    comm = WebsocketCommunicator(application, "/ws/dataplane/",
                                 headers=[(b"authorization", f"Bearer {token}".encode())])
    accepted, _ = await comm.connect(timeout=3)
    assert accepted
    await comm.send_json_to({"type": "hello", "version": None, "hash": None,
                             "software": "test/1", "workers": 1})
    return comm


@database_sync_to_async
def rows():
    return list(TrafficMinute.objects.order_by("route_id").values())


@database_sync_to_async
def setup():
    w = world()
    node, token = Node.register("edge-1")
    return w, node, token


async def handled(comm, node):
    """Send a heartbeat and wait until it is handled: everything before it is done."""
    async def hello_stored():  # the hello writes last_seen too: read it after that write
        return await database_sync_to_async(lambda: Node.objects.get(pk=node.pk).connected)()
    await wait_until(hello_stored, what="hello handled")
    before = await database_sync_to_async(lambda: Node.objects.get(pk=node.pk).last_seen)()
    await comm.send_json_to({"type": "heartbeat", "version": None, "hash": None})

    async def seen():
        return await database_sync_to_async(
            lambda: Node.objects.get(pk=node.pk).last_seen)() != before
    await wait_until(seen, what="heartbeat handled")


async def test_it_stores_and_merges_two_reports_of_the_same_minute():
    w, node, token = await setup()
    layer = get_channel_layer()
    live = await layer.new_channel()
    await layer.group_add(notify.LIVE_GROUP, live)
    comm = await connect(token)
    await handled(comm, node)
    shop_api, demo = w["shop_api"].pk, w["demo"].pk
    await comm.send_json_to(stats({
        shop_api: route_entry(3, {"2xx": 2, "5xx": 1}, {"connection_refused": 1},
                              latency=histogram(s0_004=2, s0_3=1), bytes_in=300, bytes_out=900),
        demo: route_entry(1, {"2xx": 1}),
        999999: route_entry(5, {"2xx": 5}),  # unknown route: ignored
    }))
    await comm.send_json_to(stats({
        shop_api: route_entry(2, {"4xx": 1, "5xx": 1}, {"connection_refused": 1, "dns_error": 0},
                              latency=histogram(s0_004=1, s70=1), bytes_in=10, bytes_out=20),
    }))
    await handled(comm, node)

    got = await rows()
    # Both reports arrived within moments: same minute, unless a minute boundary fell
    # between them; merged, either way the sums are the same.
    api_rows = [r for r in got if r["route_id"] == shop_api]
    assert {r["route_id"] for r in got} == {shop_api, demo}
    if len(api_rows) == 1:
        r = api_rows[0]
        assert r["requests"] == 5
        assert (r["status_2xx"], r["status_4xx"], r["status_5xx"]) == (2, 1, 2)
        assert r["by_proxy_status"] == {"connection_refused": 2}
        assert r["latency"] == histogram(s0_004=3, s0_3=1, s70=1)
        assert (r["bytes_in"], r["bytes_out"]) == (310, 920)
    assert sum(r["requests"] for r in api_rows) == 5
    assert all(r["node_id"] == node.pk and r["tenant_id"] == w["shop"].pk for r in api_rows)
    assert await layer.receive(live) == {"type": notify.TRAFFIC_UPDATED}
    await comm.disconnect()


async def test_it_records_the_ejections_a_node_reports():
    w, node, token = await setup()
    comm = await connect(token)
    await handled(comm, node)
    target = w["target"].pk
    await comm.send_json_to(stats({}, ejections=[{"target_id": target, "until": time.time() + 30},
                                                 {"target_id": 424242, "until": time.time() + 30}]))
    await handled(comm, node)
    ejected = await database_sync_to_async(
        lambda: list(TargetEjection.objects.values_list("node_id", "target_id")))()
    assert ejected == [(node.pk, target)]
    await comm.send_json_to(stats({}, ejections=[]))  # the ejection ended
    await handled(comm, node)
    assert not await database_sync_to_async(TargetEjection.objects.exists)()
    await comm.disconnect()


@pytest.mark.parametrize("bad", [
    {"type": "stats", "routes": []},
    {"type": "stats", "routes": {"abc": {"requests": 1}}},
    {"type": "stats", "routes": {"R": {"requests": -1}}},
    {"type": "stats", "routes": {"R": {"requests": 1.5}}},
    {"type": "stats", "routes": {"R": {"requests": True}}},
    {"type": "stats", "routes": {"R": {"requests": 10 ** 30}}},
    {"type": "stats", "routes": {"R": {"requests": 1, "latency_buckets": [1, 2]}}},
    {"type": "stats", "routes": {"R": {"requests": 1, "by_status": {"9xx": 1}}}},
    {"type": "stats", "routes": {"R": {"requests": 1, "by_proxy_status": {"<script>": 1}}}},
    {"type": "stats", "routes": {"R": {"requests": 1, "by_proxy_status": {
        f"t{i}": 1 for i in range(schema.MAX_STATS_PROXY_STATUS + 1)}}}},
    {"type": "stats", "routes": {str(i): {"requests": 1} for i in range(schema.MAX_STATS_ROUTES + 1)}},
    {"type": "stats", "interval": "soon", "routes": {}},
    {"type": "stats", "routes": {}, "ejections": {"target_id": 1}},
    {"type": "stats", "routes": {}, "ejections": [{"target_id": 1, "until": "later"}]},
    {"type": "stats", "routes": "everything"},
], ids=lambda b: str(b)[:60])
async def test_it_ignores_malformed_or_oversized_reports_and_keeps_serving(bad):
    w, node, token = await setup()
    comm = await connect(token)
    await handled(comm, node)
    # "R" stands for a real route, so that only the broken part makes the difference
    await comm.send_json_to(json.loads(json.dumps(bad).replace('"R"', f'"{w["shop_api"].pk}"')))
    await comm.send_json_to(stats({w["demo"].pk: route_entry(1, {"2xx": 1})}))
    await handled(comm, node)  # the connection is still served
    got = await rows()
    assert [(r["route_id"], r["requests"]) for r in got] == [(w["demo"].pk, 1)]
    await comm.disconnect()


async def test_it_ignores_reports_before_hello():
    w, node, token = await setup()
    comm = WebsocketCommunicator(application, "/ws/dataplane/",
                                 headers=[(b"authorization", f"Bearer {token}".encode())])
    assert (await comm.connect(timeout=3))[0]
    await comm.send_json_to(stats({w["demo"].pk: route_entry(1, {"2xx": 1})}))
    await comm.send_json_to({"type": "hello", "version": None, "hash": None, "software": "t", "workers": 1})
    await handled(comm, node)
    assert await rows() == []
    await comm.disconnect()
