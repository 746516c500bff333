"""The control-plane side of config sync, against the real consumer.

Absence of a push is proven by ordering, not by waiting: the consumer handles a
connection's messages in order, so when the next frame after some step is the push
of a *later* version, nothing was pushed in between.
"""
import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import transaction

from controlplane.alerts.models import Alert
from controlplane.asgi import application
from controlplane.publishing import notify
from controlplane.publishing.models import ConfigVersion, Node, NodeEvent
from dataplane import schema
from tests.support import fresh_layer, wait_until_async as wait_until  # noqa: F401 - fresh_layer is autouse

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def quick_coalesce(settings):
    settings.SWITCHYARD_PUSH_COALESCE_SECONDS = 0.15


def snapshot(n: int) -> dict:
    snap = schema.empty_snapshot()
    snap["pools"] = [{"id": 1, "name": "web", "tenant": None,
                      "targets": [{"id": 1, "host": "127.0.0.1", "port": 9000 + n}]}]
    snap["routes"] = [{"id": 1, "name": "demo", "tenant": None, "hosts": ["demo.localhost"], "pool": 1}]
    schema.parse_snapshot(snap)
    return snap


def digest(n: int) -> str:
    return schema.snapshot_hash(snapshot(n))


@database_sync_to_async
def make_version(n: int, hint: bool = False) -> ConfigVersion:
    with transaction.atomic():
        snap = snapshot(n)
        version = ConfigVersion.objects.create(number=n, sha256=schema.snapshot_hash(snap), snapshot=snap)
        if hint:
            notify.config_changed_on_commit()
    return version


@database_sync_to_async
def make_burst(first: int, count: int) -> None:
    for n in range(first, first + count):
        with transaction.atomic():
            snap = snapshot(n)
            ConfigVersion.objects.create(number=n, sha256=schema.snapshot_hash(snap), snapshot=snap)
            notify.config_changed_on_commit()


@database_sync_to_async
def register(name="edge-1"):
    return Node.register(name)


@database_sync_to_async
def reload(node: Node) -> Node:
    node.refresh_from_db()
    return node


async def open_ws(token: str | None, header: bytes | None = None):
    headers = []
    if header is not None:
        headers.append((b"authorization", header))
    elif token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    comm = WebsocketCommunicator(application, "/ws/dataplane/", headers=headers)
    accepted, code = await comm.connect(timeout=3)
    return comm, accepted, code


async def hello(token, node, version=None, hash=None):
    """Connect and say hello; returns once the consumer has marked the node connected."""
    before = (await reload(node)).connected_since
    comm, accepted, _ = await open_ws(token)
    assert accepted
    await comm.send_json_to({"type": "hello", "version": version, "hash": hash,
                             "software": "test/1", "workers": 2})

    async def greeted():
        n = await reload(node)
        return n.connected and n.connected_since != before
    await wait_until(greeted, what="hello handled")
    return comm


async def next_frame(comm, timeout=3.0):
    """The next frame that is not a full health-state message (sent after every hello)."""
    while True:
        frame = await comm.receive_from(timeout=timeout)
        if isinstance(frame, str) and json.loads(frame).get("type") == schema.MSG_HEALTH \
                and not json.loads(frame)["targets"]:
            continue
        return frame


async def next_push(comm, timeout=3.0) -> dict:
    frame = await next_frame(comm, timeout)
    assert isinstance(frame, bytes), f"expected a binary push, got {frame!r}"
    return schema.decode_push(frame)


async def heartbeat(comm, node, version, hash):
    """Send a heartbeat and wait until the consumer has started handling it, which
    means that everything sent before it (a hello and its push check) is done."""
    before = (await reload(node)).last_seen
    await comm.send_json_to({"type": "heartbeat", "version": version, "hash": hash})

    async def seen():
        return (await reload(node)).last_seen != before
    await wait_until(seen, what="heartbeat handled")


async def nack(comm, push, running_version=None, running_hash=None, errors=None):
    await comm.send_json_to({
        "type": "nack", "nonce": push["nonce"], "version": push["version"], "hash": push["hash"],
        "running_version": running_version, "running_hash": running_hash,
        "errors": errors if errors is not None else [{"path": "routes[0].hosts", "message": "bad host"}],
    })


async def test_it_refuses_a_missing_unknown_or_revoked_token():
    node, token = await register()
    for header in (None, b"Bearer node_not-a-token", b"Basic " + token.encode()):
        comm, accepted, _ = await open_ws(None, header=header)
        assert not accepted, header
    node.revoked = True
    await database_sync_to_async(node.save)()
    comm, accepted, _ = await open_ws(token)
    assert not accepted


async def test_it_marks_the_node_connected_on_hello_and_disconnected_on_close():
    node, token = await register()
    comm = await hello(token, node)

    async def connected():
        n = await reload(node)
        return n.connected and n.software_version == "test/1" and n.workers == 2
    await wait_until(connected, what="node connected")
    n = await reload(node)
    assert n.connected_since is not None and n.last_seen is not None
    await comm.disconnect()

    async def gone():
        return not (await reload(node)).connected
    await wait_until(gone, what="node disconnected")


async def test_it_pushes_nothing_when_the_hello_hash_matches():
    node, token = await register()
    await make_version(1)
    comm = await hello(token, node, 1, digest(1))
    await heartbeat(comm, node, 1, digest(1))  # the hello's push check is done
    await make_version(2)
    await comm.send_json_to({"type": "heartbeat", "version": 1, "hash": digest(1)})
    push = await next_push(comm)
    assert push["version"] == 2  # the first frame at all: the hello got no push
    await comm.disconnect()


async def test_it_pushes_the_current_version_when_the_hello_hash_differs():
    node, token = await register()
    await make_version(1)
    await make_version(2)
    comm = await hello(token, node, 1, digest(1))
    push = await next_push(comm)
    assert push["type"] == "push"
    assert push["version"] == 2
    assert push["hash"] == digest(2)
    assert push["snapshot"] == snapshot(2)
    assert schema.snapshot_hash(push["snapshot"]) == push["hash"]
    assert len(push["nonce"]) == 16
    await comm.disconnect()


async def test_it_records_an_ack_on_the_node():
    node, token = await register()
    await make_version(1)
    comm = await hello(token, node)
    push = await next_push(comm)
    await comm.send_json_to({"type": "ack", "nonce": push["nonce"], "version": 1,
                             "hash": push["hash"], "apply_ms": 3.5})

    async def acked():
        n = await reload(node)
        return n if n.applied_version == 1 else None
    n = await wait_until(acked, what="ACK recorded")
    assert n.applied_hash == digest(1)
    assert n.last_apply_ms == 3.5 and n.last_ack is not None
    event = await database_sync_to_async(lambda: NodeEvent.objects.get(node=node))()
    assert (event.kind, event.version, event.nonce, event.apply_ms) == ("ack", 1, push["nonce"], 3.5)
    await comm.disconnect()


async def test_it_records_a_nack_and_never_pushes_that_version_again():
    node, token = await register()
    await make_version(1)
    comm = await hello(token, node, None, None)
    first = await next_push(comm)
    await comm.send_json_to({"type": "ack", "nonce": first["nonce"], "version": 1,
                             "hash": first["hash"], "apply_ms": 1.0})
    await make_version(2, hint=True)
    push = await next_push(comm)
    assert push["version"] == 2
    await nack(comm, push, 1, digest(1))

    async def nacked():
        n = await reload(node)
        return n if n.rejected_version == 2 else None
    n = await wait_until(nacked, what="NACK recorded")
    assert n.rejected_hash == digest(2)
    assert n.last_error == [{"path": "routes[0].hosts", "message": "bad host"}]
    assert n.last_error_at is not None
    assert n.applied_version == 1
    event = await database_sync_to_async(lambda: NodeEvent.objects.filter(node=node, kind="nack").get())()
    assert event.version == 2 and event.errors == n.last_error
    alert = await database_sync_to_async(lambda: Alert.objects.get(kind="node_rejected_config"))()
    assert "edge-1" in alert.subject and alert.data["version"] == 2

    # Not again on a heartbeat ...
    await heartbeat(comm, node, 1, digest(1))
    await heartbeat(comm, node, 1, digest(1))  # the first one's check is done
    # ... nor after a reconnect and hello (the record is in the database).
    await comm.disconnect()
    comm = await hello(token, node, 1, digest(1))
    await heartbeat(comm, node, 1, digest(1))  # the hello's check is done: it pushed nothing
    await heartbeat(comm, node, 1, digest(1))
    # A newer version is pushed: the first frame on this connection.
    await make_version(3, hint=True)
    push = await next_push(comm)
    assert push["version"] == 3
    await comm.disconnect()


async def test_it_bounds_the_errors_of_a_nack():
    node, token = await register()
    await make_version(1)
    comm = await hello(token, node)
    push = await next_push(comm)
    errors = [{"path": f"routes[{i}]", "message": "x" * 5000} for i in range(10_000)]
    await nack(comm, push, errors=errors)

    async def nacked():
        n = await reload(node)
        return n if n.rejected_version == 1 else None
    n = await wait_until(nacked, what="NACK recorded")
    assert len(n.last_error) <= 51
    assert all(len(e["message"]) <= 1000 for e in n.last_error)
    await comm.disconnect()


async def test_it_coalesces_a_burst_of_twenty_changes_into_at_most_two_pushes():
    node, token = await register()
    await make_version(1)
    comm = await hello(token, node, 1, digest(1))
    await heartbeat(comm, node, 1, digest(1))
    await make_burst(2, 20)  # v2..v21, each with its own hint after commit
    pushes = []
    while not pushes or pushes[-1]["version"] != 21:
        pushes.append(await next_push(comm))
    assert len(pushes) <= 2, [p["version"] for p in pushes]
    await comm.disconnect()


async def test_it_reads_the_database_once_per_burst_of_hints(monkeypatch):
    from controlplane.publishing import consumers
    checks = []
    real = consumers.plan_push

    def counting(*args):
        checks.append(args)
        return real(*args)
    monkeypatch.setattr(consumers, "plan_push", counting)
    node, token = await register()
    await make_version(1)
    comm = await hello(token, node, 1, digest(1))
    await heartbeat(comm, node, 1, digest(1))

    async def settled():  # the hello's and the heartbeat's checks
        return len(checks) == 2
    await wait_until(settled, what="the hello and heartbeat checks")
    before = len(checks)
    layer = get_channel_layer()
    for _ in range(20):
        await layer.group_send(notify.DATAPLANE_GROUP, {"type": notify.CONFIG_CHANGED})

    async def checked():
        return len(checks) > before
    await wait_until(checked, what="the coalesced check")
    await make_version(2, hint=True)  # a later hint gets its own check, and its push
    assert (await next_push(comm))["version"] == 2
    assert len(checks) - before == 2
    await comm.disconnect()


async def test_it_repairs_a_lost_hint_on_the_next_heartbeat():
    node, token = await register()
    await make_version(1)
    comm = await hello(token, node, 1, digest(1))
    await heartbeat(comm, node, 1, digest(1))
    await make_version(2)  # no hint sent: as if the group message was lost
    await comm.send_json_to({"type": "heartbeat", "version": 1, "hash": digest(1)})
    push = await next_push(comm)
    assert push["version"] == 2
    await comm.disconnect()


async def test_it_polls_for_versions_stored_by_other_processes_in_embedded_mode(settings):
    settings.SWITCHYARD_POLL_SECONDS = 0.1
    node, token = await register()
    await make_version(1)
    comm = await hello(token, node, 1, digest(1))
    await heartbeat(comm, node, 1, digest(1))
    await make_version(2)  # no hint, no heartbeat: only polling can notice
    push = await next_push(comm)
    assert push["version"] == 2
    await comm.disconnect()


async def test_it_forwards_health_changes_as_text_frames():
    node, token = await register()
    comm = await hello(token, node)

    async def connected():
        return (await reload(node)).connected
    await wait_until(connected, what="hello handled")
    await get_channel_layer().group_send(
        notify.DATAPLANE_GROUP, {"type": notify.HEALTH_CHANGED, "targets": {"7": False, 8: True}})
    frame = await next_frame(comm)
    assert json.loads(frame) == {"type": "health", "targets": {"7": False, "8": True}}
    await comm.disconnect()


async def test_it_does_not_push_again_a_version_still_awaiting_its_answer():
    node, token = await register()
    await make_version(1)
    comm = await hello(token, node)
    first = await next_push(comm)
    assert first["version"] == 1
    await heartbeat(comm, node, None, None)  # the apply is still running on the node
    await make_version(2, hint=True)
    push = await next_push(comm)
    assert push["version"] == 2
    await comm.disconnect()


async def test_it_pushes_the_materialized_snapshot_with_private_keys(monkeypatch):
    from controlplane.publishing import consumers
    consumers._materialized_cache.clear()

    def materialize(snap):
        out = json.loads(json.dumps(snap))
        for cert in out["certificates"]:
            cert["private_key_pem"] = "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n"
        return out
    monkeypatch.setattr(consumers, "materialize", materialize)
    node, token = await register()
    snap = snapshot(1)
    snap["certificates"] = [{"id": 1, "name": "demo", "tenant": None, "hosts": ["demo.localhost"],
                             "certificate_pem": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
                             "fingerprint": "ab"}]
    await database_sync_to_async(ConfigVersion.objects.create)(
        number=1, sha256=schema.snapshot_hash(snap), snapshot=snap)
    comm = await hello(token, node)
    push = await next_push(comm)
    consumers._materialized_cache.clear()
    assert push["snapshot"]["certificates"][0]["private_key_pem"].startswith("-----BEGIN PRIVATE KEY")
    assert schema.snapshot_hash(push["snapshot"]) == push["hash"]  # keys are not part of the hash
    await comm.disconnect()


async def test_it_closes_the_connection_of_a_node_revoked_while_connected():
    node, token = await register()
    comm = await hello(token, node)
    await database_sync_to_async(Node.objects.filter(pk=node.pk).update)(revoked=True)
    await comm.send_json_to({"type": "heartbeat", "version": None, "hash": None})
    out = await comm.receive_output(timeout=3)
    while out["type"] == "websocket.send":  # the health state sent after hello
        out = await comm.receive_output(timeout=3)
    assert out["type"] == "websocket.close"


@database_sync_to_async
def make_target_health(healthy: bool):
    from controlplane.health.status import bump_generation
    from controlplane.proxy.models import Pool, Target

    with transaction.atomic():
        target = Target.objects.first() or Target.objects.create(
            pool=Pool.objects.create(name="checked"), host="127.0.0.1", port=9001)
        Target.objects.filter(pk=target.pk).update(healthy=healthy)
        bump_generation()  # what a health transition does, without any group message
    return target.pk


async def test_it_sends_the_health_state_after_hello_and_when_its_generation_moves():
    node, token = await register()
    target_id = await make_target_health(True)
    comm = await hello(token, node)
    first = json.loads(await comm.receive_from(timeout=3))
    assert first == {"type": "health", "targets": {str(target_id): True}}
    await make_target_health(False)  # no hint: the heartbeat compares the generation
    await heartbeat(comm, node, None, None)
    second = json.loads(await next_frame(comm))
    assert second == {"type": "health", "targets": {str(target_id): False}}
    await comm.disconnect()
