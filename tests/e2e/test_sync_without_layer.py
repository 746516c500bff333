"""Nodes stay in sync while the channel layer (Redis) is stopped or frozen.

Production mode with real processes: a fresh PostgreSQL database, a ``redis-server`` of
this test's own on a free loopback port as the channel layer, Daphne and two data-plane
nodes. Group messages are only hints: with Redis stopped (the process gone) or frozen
(SIGSTOP) the nodes keep their sync connections, a change saved meanwhile reaches every
node by its next heartbeat (answered from the database), and once Redis is back the
consumers are in their groups again and changes arrive by hint, well within a heartbeat.
The dashboard's live socket (``/ws/live/``) stays open through the outage as well.
"""
from __future__ import annotations

import asyncio
import json
import re
import threading
import time

import aiohttp
import pytest
import requests

from dataplane.schema import HEARTBEAT_SECONDS
from tests.conftest import POSTGRES_URL
from tests.e2e.harness import RedisServer, Stack, stack_on_own_redis, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

# A change without hint waits for the node's next heartbeat; margin for push and apply
# on a loaded 2-core machine.
HEARTBEAT_DEADLINE = HEARTBEAT_SECONDS + 5.0
# A change with hint: coalescing (~150 ms) and apply; far below a heartbeat, so two changes
# in a row that both meet it cannot both have been carried by heartbeats.
HINT_DEADLINE = 4.0
# The channel layer reads Redis with a 30 s socket timeout: a receive on a frozen Redis fails then.
FROZEN_RECEIVE_FAILS = 30.0 + 15.0
# The consumers retry joining with backoff capped at 5 s; each attempt waits up to 2 s.
REJOIN_DEADLINE = 15.0
# The live view polls the database every SWITCHYARD_LIVE_POLL_SECONDS (1 s).
LIVE_DEADLINE = 5.0
DATAPLANE_GROUP_KEY = "asgi:group:switchyard.dataplane"
UNREACHABLE = "sync: the channel layer is unreachable"
REACHABLE = "sync: the channel layer is reachable again"


@pytest.fixture
def synced(tmp_path):
    """(stack, redis server): Daphne on its own Redis, two nodes in sync serving one site."""
    with stack_on_own_redis(tmp_path, POSTGRES_URL) as (stack, _db, server):
        upstream = stack.add_upstream("base")
        site = stack.create_site("base", upstream)
        for _ in range(2):
            node = stack.add_node()
            node.wait_served(site["host"], upstream.name, timeout=30)
            stack.wait_node_in_sync(node)
        wait_until(lambda: _group_members(server) == 2, 10, "both consumers in the data-plane group",
                   on_timeout=stack.logs)
        yield stack, server


def _group_members(server: RedisServer) -> int:
    client = server.client()
    try:
        return client.zcard(DATAPLANE_GROUP_KEY)
    finally:
        client.close()


def _daphne_log(stack: Stack) -> str:
    return stack.daphne.log_path.read_text(errors="replace")


def _connections(stack: Stack) -> dict[str, int]:
    """Sync connections each node opened so far (one hello per connection)."""
    log = _daphne_log(stack)
    return {n.name: len(re.findall(rf"sync: node {re.escape(n.name)} hello", log)) for n in stack.nodes}


def _change_reaches_every_node(stack: Stack, name: str, deadline: float) -> float:
    """Store a new site through the service layer; seconds until every node serves it."""
    upstream = stack.add_upstream(name)
    started = time.monotonic()
    site = stack.create_site(name, upstream)
    for node in stack.nodes:
        node.wait_served(site["host"], upstream.name, timeout=max(0.1, started + deadline - time.monotonic()))
    return time.monotonic() - started


def _hints_work_again(stack: Stack, report_timing, label: str) -> None:
    for i in range(2):
        took = _change_reaches_every_node(stack, f"{label}-after-{i}", HINT_DEADLINE)
        report_timing(f"[production] {label}: change after Redis is back -> served by both nodes (hint)", took)


def test_nodes_stay_in_sync_while_redis_is_stopped(synced, report_timing):
    stack, server = synced
    before = _connections(stack)

    server.stop()
    took = _change_reaches_every_node(stack, "outage", HEARTBEAT_DEADLINE)
    report_timing("[production] Redis stopped: change -> served by both nodes (heartbeat)", took)
    wait_until(lambda: UNREACHABLE in _daphne_log(stack), 10, "the outage in Daphne's log",
               on_timeout=stack.daphne.tail)
    assert _daphne_log(stack).count(UNREACHABLE) == 1, "the outage is logged once, not per message"

    server.start()  # same port, empty: the groups are gone
    wait_until(lambda: _group_members(server) == 2, REJOIN_DEADLINE, "both consumers to rejoin the group",
               on_timeout=stack.logs)
    _hints_work_again(stack, report_timing, "redis-stopped")
    after = _connections(stack)
    assert all(after[name] - before[name] <= 1 for name in before), (before, after)


def test_nodes_stay_in_sync_while_redis_is_frozen(synced, report_timing):
    stack, server = synced
    before = _connections(stack)

    server.freeze()
    try:
        took = _change_reaches_every_node(stack, "frozen", HEARTBEAT_DEADLINE)
        report_timing("[production] Redis frozen: change -> served by both nodes (heartbeat)", took)
        # the consumers' receive fails on the socket timeout; the consumers live on
        wait_until(lambda: UNREACHABLE in _daphne_log(stack), FROZEN_RECEIVE_FAILS,
                   "the failed receive in Daphne's log", interval=0.5, on_timeout=stack.daphne.tail)
        took = _change_reaches_every_node(stack, "frozen-later", HEARTBEAT_DEADLINE)
        report_timing("[production] Redis frozen > 30 s: change -> served by both nodes (heartbeat)", took)
    finally:
        server.thaw()
    wait_until(lambda: REACHABLE in _daphne_log(stack), REJOIN_DEADLINE, "the consumers to rejoin",
               on_timeout=stack.daphne.tail)
    _hints_work_again(stack, report_timing, "redis-frozen")
    after = _connections(stack)
    assert all(after[name] - before[name] <= 1 for name in before), (before, after)


class LiveSocket:
    """A signed-in dashboard's ``/ws/live/`` connection, read in a thread of its own."""

    def __init__(self, port: int, cookies: dict):
        self.url, self.origin, self.cookies = f"ws://127.0.0.1:{port}/ws/live/", f"http://127.0.0.1:{port}", cookies
        self.states: list[dict] = []
        self.closed: str | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._read(),), daemon=True)
        self.thread.start()

    async def _read(self):
        try:
            async with aiohttp.ClientSession(cookies=self.cookies) as session:
                async with session.ws_connect(self.url, headers={"Origin": self.origin}) as ws:
                    self.ws = ws
                    async for frame in ws:
                        if frame.type == aiohttp.WSMsgType.TEXT:
                            self.states.append(json.loads(frame.data))
                    self.closed = f"closed (code {ws.close_code})"
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.closed = repr(exc)

    def version(self) -> int | None:
        return self.states[-1]["config"]["version"] if self.states else None

    def close(self):
        if self.ws is not None and self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.ws.close(), self.loop).result(10)
        self.thread.join(10)


def _signed_in(stack: Stack) -> dict:
    """Session cookies of a staff user signed in to the dashboard."""
    password = "correct horse battery"
    stack.cp.manage("shell", "-c", "from django.contrib.auth import get_user_model\n"
                    "u, _ = get_user_model().objects.get_or_create(username='ops')\n"
                    f"u.is_staff = u.is_superuser = True; u.set_password({password!r}); u.save()")
    browser = requests.Session()
    base = f"http://127.0.0.1:{stack.cp_port}"
    browser.get(f"{base}/login/", timeout=30)
    response = browser.post(f"{base}/login/", timeout=30, data={
        "username": "ops", "password": password, "csrfmiddlewaretoken": browser.cookies["csrftoken"]})
    assert response.status_code == 200 and response.url == f"{base}/", response.url
    return browser.cookies.get_dict()


def test_the_live_dashboard_socket_stays_open_while_redis_is_stopped(synced):
    stack, server = synced
    live = LiveSocket(stack.cp_port, _signed_in(stack))
    try:
        wait_until(live.version, 10, "the first live state", on_timeout=lambda: f"{live.closed}\n{stack.logs()}")
        server.stop()
        site = stack.create_site("live", stack.add_upstream("live"))
        wait_until(lambda: live.closed or live.version() == site["version"], LIVE_DEADLINE,
                   f"v{site['version']} in the live state", on_timeout=stack.daphne.tail)
        assert live.closed is None, live.closed
    finally:
        live.close()
