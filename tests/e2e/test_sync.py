"""Config sync end to end, with real processes, in embedded and production mode.

Each test starts Daphne, a data-plane node and aiohttp upstreams on free loopback ports;
changes are made through the service layer (controlplane.proxy.services) against the
same database Daphne uses. Every wait is a poll with a deadline; how long a change took
to be served is reported in the "Switchyard timings" section of the test summary.
"""
from __future__ import annotations

import time

import pytest

from dataplane.schema import HEARTBEAT_SECONDS

pytestmark = pytest.mark.e2e

# A change is pushed on commit (the hint: Redis, or embedded the local datagram bridge;
# the DB poll every 0.5 s as the fallback) and coalesced for ~150 ms; 5 s leaves room
# for a loaded 2-core CI machine.
CHANGE_DEADLINE = 5.0
# The node reconnects with backoff of at most 30 s after the control plane returns.
RECONNECT_DEADLINE = 45.0


def test_change_through_service_layer_is_served_within_deadline(running, control_plane, report_timing):
    stack, node, _, _ = running
    upstream = stack.add_upstream("new")
    started = time.monotonic()
    site = stack.create_site("new", upstream)
    stored = time.monotonic() - started
    node.wait_served(site["host"], upstream.name, timeout=CHANGE_DEADLINE)
    elapsed = time.monotonic() - started
    report_timing(f"[{control_plane.mode}] change -> served through the node (stored after {stored:.3f} s)", elapsed)
    assert elapsed < CHANGE_DEADLINE
    state, _ = stack.wait_node_in_sync(node, timeout=10)
    assert state["node"]["applied_hash"] == site["hash"]
    assert node.readyz() == {"version": site["version"], "hash": site["hash"]}


def test_node_keeps_serving_when_control_plane_is_killed(running):
    stack, node, site, upstream = running
    stack.kill_control_plane()
    # Keep asking for a while: the node retries the control plane meanwhile, traffic is untouched.
    until = time.monotonic() + 3.0
    answers = 0
    while time.monotonic() < until:
        response = node.get(site["host"])
        assert response.status == 200, response
        assert f"upstream={upstream.name}\n" in response.body
        answers += 1
    assert answers > 10
    assert node.proc.alive
    assert node.admin("/healthz").status == 200


def test_node_restarted_while_control_plane_is_down_serves_cached_config(running, control_plane, report_timing):
    stack, node, site, upstream = running
    stack.kill_control_plane()
    node.stop()
    started = time.monotonic()
    node.start(wait=False)
    node.wait_served(site["host"], upstream.name, timeout=20)
    report_timing(f"[{control_plane.mode}] node restart (control plane down) -> serving from cache",
                  time.monotonic() - started)
    assert any(node.cache_dir.iterdir()), "the node wrote no cache"
    assert node.readyz() == {"version": site["version"], "hash": site["hash"]}  # the cached version


def test_node_catches_up_with_change_made_while_control_plane_was_down(running, control_plane, report_timing):
    stack, node, site, upstream = running
    before = stack.node_record(node)
    stack.kill_control_plane()
    later = stack.add_upstream("while-down")
    change = stack.create_site("while-down", later)  # stored in the DB; no control plane to push it
    assert change["hash"] != before["applied_hash"]
    assert node.get(change["host"]).status == 404  # the node cannot know yet
    assert f"upstream={upstream.name}\n" in node.get(site["host"]).body
    started = time.monotonic()
    stack.start_control_plane()
    node.wait_served(change["host"], later.name, timeout=RECONNECT_DEADLINE)
    served = time.monotonic() - started
    state, _ = stack.wait_node_in_sync(node, timeout=RECONNECT_DEADLINE)
    # The node's recorded hash is the hash of the version stored while it was disconnected.
    assert state["node"]["applied_hash"] == change["hash"] == state["latest"]["hash"]
    assert state["node"]["applied_version"] == change["version"]
    assert node.readyz() == {"version": change["version"], "hash": change["hash"]}  # the node's own view
    report_timing(f"[{control_plane.mode}] control plane restart -> node caught up", served)


def test_dropped_change_hint_is_repaired_by_heartbeat(make_stack, control_plane, report_timing):
    # SWITCHYARD_POLL_SECONDS=0 turns off the embedded consumer's DB polling, so only the
    # heartbeat (every HEARTBEAT_SECONDS) can bring a version whose hint was lost.
    stack = make_stack(SWITCHYARD_POLL_SECONDS="0")
    stack.start_control_plane()
    upstream = stack.add_upstream("base")
    site = stack.create_site("base", upstream)
    node = stack.add_node()
    node.wait_served(site["host"], upstream.name, timeout=30)
    stack.wait_node_in_sync(node)

    later = stack.add_upstream("no-hint")
    started = time.monotonic()
    change = stack.create_site("no-hint", later, drop_hint=True)  # version stored, group message dropped
    node.wait_served(change["host"], later.name, timeout=HEARTBEAT_SECONDS + 5)
    elapsed = time.monotonic() - started
    report_timing(f"[{control_plane.mode}] version without hint -> served (heartbeat repair)", elapsed)
    state, _ = stack.wait_node_in_sync(node, timeout=10)
    assert state["node"]["applied_hash"] == change["hash"]
