"""The embedded-mode hint bridge (controlplane.publishing.localhints), with real sockets.

Datagrams come from real other processes (a small ``python -c`` sender), because the
receiver ignores datagrams sent by its own process. The receiver re-sends what it
accepts on the real in-memory channel layer; the tests read it from a channel in the
target group. Datagrams on one Unix socket arrive in the order they were sent, so
"everything before the valid one was dropped" is proven by the valid one being the
first message that arrives, and by the receiver's counters.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import sys

import pytest
from channels.layers import get_channel_layer

from controlplane.publishing import localhints, notify
from tests.support import fresh_layer, wait_until_async as wait_for  # noqa: F401 - fresh_layer is autouse

pytestmark = pytest.mark.skipif(not localhints.SUPPORTED, reason="abstract Unix sockets are Linux-only")

SENDER = r"""
import json, socket, sys
address = "\0" + sys.argv[1]
for hexdata in json.load(sys.stdin):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # blocking: waits while the queue is full
    s.sendto(bytes.fromhex(hexdata), address)
    s.close()
"""


@pytest.fixture(autouse=True)
def fresh_receiver(monkeypatch):
    # The per-process receiver state must not leak between tests.
    monkeypatch.setattr(localhints, "_receiver", None)
    monkeypatch.setattr(localhints, "_retry_at", None)
    monkeypatch.setattr(localhints, "_logged_in_use", False)
    yield
    if localhints._receiver is not None:
        localhints._receiver.close()


@pytest.fixture
def address():
    return "\0" + localhints.ADDRESS_PREFIX + "test-" + secrets.token_hex(8)


async def send_from_other_process(address: str, datagrams: list[bytes], **kwargs) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SENDER, address[1:], stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, **kwargs)
    _, err = await proc.communicate(json.dumps([d.hex() for d in datagrams]).encode())
    assert proc.returncode == 0, err.decode()


def j(obj) -> bytes:
    return json.dumps(obj).encode()


MALFORMED = {
    "not JSON": b"config.changed",
    "not UTF-8": b'{"type": "config.changed\xff"}',
    "a JSON array": j(["config.changed"]),
    "a JSON string": j("config.changed"),
    "JSON null": b"null",
    "no type": j({"targets": {"1": True}}),
    "unknown type": j({"type": "diag.command", "message": {"op": "tail"}}),
    "type not a string": j({"type": ["config.changed"]}),
    "extra field": j({"type": "config.changed", "group": "switchyard.live"}),
    "health without targets": j({"type": "health.changed"}),
    "targets a list": j({"type": "health.changed", "targets": [1, 2]}),
    "targets empty": j({"type": "health.changed", "targets": {}}),
    "target id not digits": j({"type": "health.changed", "targets": {"1; DROP": True}}),
    "target id not ASCII digits": j({"type": "health.changed", "targets": {"\u0663": True}}),
    "target id too long": j({"type": "health.changed", "targets": {"1" * 30: True}}),
    "health value an int": j({"type": "health.changed", "targets": {"1": 1}}),
    "health value a string": j({"type": "health.changed", "targets": {"1": "false"}}),
    "deeply nested": b"[" * 50_000,
    # well-formed but above the size cap (the receiver sees it truncated: MSG_TRUNC)
    "oversized": j({"type": "health.changed", "targets": {str(i): True for i in range(8000)}}),
    "empty": b"",
}


async def test_malformed_datagrams_are_dropped_and_valid_ones_still_get_through(address):
    layer = get_channel_layer()
    dataplane = await layer.new_channel()
    live = await layer.new_channel()
    await layer.group_add(notify.DATAPLANE_GROUP, dataplane)
    await layer.group_add(notify.LIVE_GROUP, live)
    receiver = localhints.ensure_receiver(layer, address=address)
    assert receiver is not None and receiver.address == address

    valid_health = {"type": notify.HEALTH_CHANGED, "targets": {"7": False, "12": True}}
    await send_from_other_process(address, list(MALFORMED.values()) + [
        j(valid_health), j({"type": notify.TRAFFIC_UPDATED}), j({"type": notify.CONFIG_CHANGED})])
    await wait_for(lambda: receiver.delivered == 3, what="the three valid hints")

    assert receiver.dropped == len(MALFORMED)
    assert receiver.ignored_own == 0
    # The first messages to arrive are the valid ones, in order: nothing malformed got through.
    assert await asyncio.wait_for(layer.receive(dataplane), 5) == valid_health
    assert await asyncio.wait_for(layer.receive(dataplane), 5) == {"type": notify.CONFIG_CHANGED}
    assert await asyncio.wait_for(layer.receive(live), 5) == {"type": notify.TRAFFIC_UPDATED}

    # The receiver keeps running after all that: one more hint arrives.
    await send_from_other_process(address, [j({"type": notify.CONFIG_CHANGED})])
    assert await asyncio.wait_for(layer.receive(dataplane), 5) == {"type": notify.CONFIG_CHANGED}
    assert receiver.serves(address)


async def test_datagrams_from_the_own_process_are_ignored(address):
    layer = get_channel_layer()
    live = await layer.new_channel()
    await layer.group_add(notify.LIVE_GROUP, live)
    receiver = localhints.ensure_receiver(layer, address=address)
    assert localhints.send_datagram(address, j({"type": notify.TRAFFIC_UPDATED}))  # this process
    await send_from_other_process(address, [j({"type": notify.TRAFFIC_UPDATED})])
    await wait_for(lambda: receiver.delivered == 1, what="the other process's hint")
    assert receiver.ignored_own == 1
    assert receiver.dropped == 0
    # forward() from the receiving process does not even send: the in-process group_send did it.
    localhints.forward({"type": notify.TRAFFIC_UPDATED}, layer, address=address)
    await send_from_other_process(address, [j({"type": notify.CONFIG_CHANGED})])
    await wait_for(lambda: receiver.delivered == 2, what="the second hint")
    assert receiver.ignored_own == 1


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to send as another user")
async def test_datagrams_from_another_user_are_dropped(address):
    layer = get_channel_layer()
    receiver = localhints.ensure_receiver(layer, address=address)
    pid = os.fork()  # a child that becomes "nobody" and sends one valid hint
    if pid == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.sendto(j({"type": notify.CONFIG_CHANGED}), address)
            os._exit(0)
        except BaseException:  # noqa: BLE001 - a forked child must exit, never return into pytest
            os._exit(1)
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    await send_from_other_process(address, [j({"type": notify.TRAFFIC_UPDATED})])
    await wait_for(lambda: receiver.delivered == 1, what="the same user's hint")
    assert receiver.dropped == 1


async def test_second_receiver_on_the_same_address_falls_back_quietly(address, caplog):
    layer = get_channel_layer()
    holder = localhints.HintReceiver(address).start(asyncio.get_running_loop())  # "another Daphne"
    try:
        with caplog.at_level(logging.INFO, logger="switchyard.hints"):
            assert localhints.ensure_receiver(layer, address=address) is None
            assert localhints.ensure_receiver(layer, address=address) is None
        in_use = [r for r in caplog.records if "already receives" in r.getMessage()]
        assert len(in_use) == 1 and in_use[0].levelno == logging.INFO
    finally:
        holder.close()


def test_forward_without_a_receiver_is_silent(address):
    layer = get_channel_layer()
    assert localhints.send_datagram(address, b'{"type":"config.changed"}') is False  # ECONNREFUSED
    localhints.forward({"type": notify.CONFIG_CHANGED}, layer, address=address)  # does not raise
    localhints.forward({"type": "no.such.hint"}, layer, address=address)
    localhints.forward({"type": notify.HEALTH_CHANGED, "targets": {str(i): True for i in range(20_000)}},
                       layer, address=address)  # too large: not sent, the poll covers it


def test_only_the_in_memory_layer_is_bridged():
    assert localhints.bridged(get_channel_layer())
    assert not localhints.bridged(None)
    assert not localhints.bridged(object())


def test_address_is_derived_from_the_database_path(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (tmp_path / "link").symlink_to(a)
    sqlite = "django.db.backends.sqlite3"
    addr_a = localhints.address_for({"ENGINE": sqlite, "NAME": str(a / "switchyard.sqlite3")})
    assert addr_a.startswith("\0" + localhints.ADDRESS_PREFIX)
    assert len(addr_a) < 108  # fits sockaddr_un
    assert addr_a == localhints.address_for({"ENGINE": sqlite, "NAME": str(tmp_path / "link" / "switchyard.sqlite3")})
    assert addr_a != localhints.address_for({"ENGINE": sqlite, "NAME": str(b / "switchyard.sqlite3")})
    assert localhints.address_for({"ENGINE": sqlite, "NAME": ":memory:"}) is None
    assert localhints.address_for({"ENGINE": sqlite, "NAME": "file:memorydb_default?mode=memory&cache=shared"}) is None
    pg = "django.db.backends.postgresql"
    assert localhints.address_for({"ENGINE": pg, "NAME": "sy", "HOST": "h1", "PORT": 5432}) != \
        localhints.address_for({"ENGINE": pg, "NAME": "sy", "HOST": "h2", "PORT": 5432})
