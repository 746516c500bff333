"""Changes stored by *another process* reach connected nodes at once, with polling off.

Real processes in both modes: Daphne with ``SWITCHYARD_POLL_SECONDS=0`` (no database
polling in the sync consumers), a data-plane node, and the changes made by
``cpshell.py`` — a separate process calling the service layer, as the Celery worker,
``manage.py`` or the bench harness do. The only ways a change can reach the node are
then the group hint (production: through Redis; embedded: the datagram bridge of
``controlplane.publishing.localhints``) and the heartbeat every ``HEARTBEAT_SECONDS``.

Each test makes several changes in a row and requires each one within ``DEADLINE``,
well below one heartbeat: a heartbeat that happens to fall just after one change
cannot bring the next one too (they are 10 s apart), so without the hint the test
fails.
"""
from __future__ import annotations

import re
import time

import pytest

from dataplane.schema import HEARTBEAT_SECONDS
from tests.e2e.harness import free_port, wait_until

pytestmark = pytest.mark.e2e

DEADLINE = 3.0
assert DEADLINE < HEARTBEAT_SECONDS / 2

RECEIVING = "hints: receiving cross-process hints"
IN_USE = "already receives cross-process hints"


def daphne_log(stack) -> str:
    return stack.daphne.log_path.read_text(errors="replace")


def test_config_change_from_another_process_reaches_node_without_polling(make_stack, control_plane,
                                                                         report_timing):
    stack = make_stack(SWITCHYARD_POLL_SECONDS="0")
    stack.start_control_plane()
    upstream = stack.add_upstream("base")
    site = stack.create_site("base", upstream)
    node = stack.add_node()
    node.wait_served(site["host"], upstream.name, timeout=30)
    stack.wait_node_in_sync(node)

    times = []
    for i in range(3):
        later = stack.add_upstream(f"other-process-{i}")
        started = time.monotonic()
        change = stack.create_site(f"other-process-{i}", later)  # stored by the cpshell process
        node.wait_served(change["host"], later.name, timeout=DEADLINE)
        times.append(time.monotonic() - started)
        # The node's ACK is recorded too (the change -> ACK path of the bench).
        state, _ = stack.wait_node_in_sync(node, timeout=DEADLINE)
        assert state["node"]["applied_hash"] == change["hash"]
    report_timing(f"[{control_plane.mode}] change from another process -> served, polling off "
                  f"(worst of {len(times)})", max(times))
    assert max(times) < DEADLINE
    if control_plane.mode == "embedded":
        assert RECEIVING in daphne_log(stack)


_METRIC = re.compile(r'^switchyard_target_healthy\{([^}]*)\}\s+(\S+)$', re.M)


def node_target_live(node, pool: str, port: int) -> bool | None:
    for labels, value in _METRIC.findall(node.admin("/metrics").body):
        if f'pool="{pool}"' in labels and f'target="127.0.0.1:{port}"' in labels:
            return float(value) == 1.0
    return None


def test_health_transitions_from_another_process_reach_node_without_polling(make_stack, control_plane,
                                                                             report_timing):
    stack = make_stack(SWITCHYARD_POLL_SECONDS="0")
    stack.start_control_plane()
    alive = stack.add_upstream("alive")
    dead_port = free_port()  # nothing listens: the check gets "connection refused"
    host = f"health-{stack.tag}.e2e.test"
    # No Celery beat runs, so the checks happen only when the test runs a round (in cpshell).
    site = control_plane.call("create_checked_site", name=f"health-{stack.tag}", host=host,
                              ports=[alive.port, dead_port], interval=300, timeout=0.5,
                              unhealthy_threshold=1, healthy_threshold=1)
    pool = site["pool"]
    node = stack.add_node()
    node.wait_served(host, alive.name, timeout=30)
    wait_until(lambda: node_target_live(node, pool, dead_port) is True, 10,
               "the node to list the unchecked target as live", on_timeout=stack.logs)

    started = time.monotonic()
    result = control_plane.call("health_round", pool_id=site["pool_id"])  # the worker's job, another process
    assert result["transitions"] == {str(site["targets"][str(dead_port)]): False}, result
    _, down = wait_until(lambda: node_target_live(node, pool, dead_port) is False, DEADLINE,
                         "the node to take the dead target out", interval=0.01, on_timeout=stack.logs)
    down_total = time.monotonic() - started

    started = time.monotonic()
    back = control_plane.call("reset_pool_health", pool_id=site["pool_id"])  # a second transition
    assert list(back.values()) == [True], back
    wait_until(lambda: node_target_live(node, pool, dead_port) is True, DEADLINE,
               "the node to put the target back", interval=0.01, on_timeout=stack.logs)
    up_total = time.monotonic() - started
    report_timing(f"[{control_plane.mode}] health transition from another process -> node, polling off "
                  f"(worst of 2)", max(down_total, up_total))


def test_second_control_plane_on_the_same_database_falls_back_to_polling(make_stack, control_plane,
                                                                         report_timing):
    if control_plane.mode != "embedded":
        pytest.skip("the datagram bridge is for embedded mode (production hints travel through Redis)")
    first = make_stack()
    first.start_control_plane()
    upstream = first.add_upstream("base")
    site = first.create_site("base", upstream)
    node1 = first.add_node()
    node1.wait_served(site["host"], upstream.name, timeout=30)
    wait_until(lambda: RECEIVING in daphne_log(first), 10, "the first Daphne to bind the hint socket",
               on_timeout=first.logs)

    second = make_stack()  # same database and var dir, default polling (0.5 s)
    second.start_control_plane()
    node2 = second.add_node()
    node2.wait_served(site["host"], upstream.name, timeout=30)
    wait_until(lambda: IN_USE in daphne_log(second), 10, "the second Daphne to log that it polls",
               on_timeout=second.logs)

    later = first.add_upstream("both")
    started = time.monotonic()
    change = first.create_site("both", later)
    node1.wait_served(change["host"], later.name, timeout=DEADLINE)   # by hint
    node2.wait_served(change["host"], later.name, timeout=DEADLINE)   # by the 0.5 s poll
    report_timing("[embedded] change -> served by nodes of two Daphnes on one database",
                  time.monotonic() - started)
    log2 = daphne_log(second)
    assert log2.count(IN_USE) == 1
    assert RECEIVING not in log2
    assert "Traceback" not in log2 and "Traceback" not in daphne_log(first)
