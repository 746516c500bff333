"""``python -m dataplane --workers 2`` against a real control plane (Daphne): the
supervisor holds the node's only sync connection, a change made through the service
layer reaches both workers, and the ACK (the dashboard's "applied") is sent only after
every worker applied it."""
from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from tests.e2e.harness import HarnessError, Node, wait_until

pytestmark = pytest.mark.e2e


class WorkersNode(Node):
    def argv(self) -> list[str]:
        return [*super().argv(), "--workers", "2", "--access-log", str(self.dir / "access.log")]

    def pids(self) -> list[int]:
        m = re.search(r"workers=2 pids=([\d,]+)", self.proc.log_path.read_text())
        return [int(p) for p in m.group(1).split(",")] if m else []

    def served_by(self, host: str) -> set[int]:
        path = self.dir / "access.log"
        if not path.exists():
            return set()
        return {d["pid"] for d in map(json.loads, path.read_text().splitlines())
                if d["host"] == host and d["status"] == 200}


def sockets_to(pid: int, port: int) -> int:
    """Established TCP connections of process ``pid`` to loopback ``port``."""
    inodes = set()
    for name in ("tcp", "tcp6"):
        for line in open(f"/proc/net/{name}").read().splitlines()[1:]:
            f = line.split()
            if int(f[2].rsplit(":", 1)[1], 16) == port and f[3] == "01":
                inodes.add(f[9])
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            n += 1
    return n


def serve_until_both(node: WorkersNode, host: str, upstream: str, timeout: float = 20.0) -> set[int]:
    def both():
        r = node.get(host)  # a new connection each time: the kernel spreads them
        if r.status != 200 or f"upstream={upstream}\n" not in r.body:
            raise HarnessError(f"{host}: {r.status} {r.body[:200]}")
        time.sleep(0.02)  # the access log is flushed every 0.2 s
        served = node.served_by(host)
        return served if len(served) == 2 else None
    return wait_until(both, timeout, f"both workers to serve {host}", interval=0.01)[0]


def test_workers_node_one_connection_change_reaches_both_and_ack_waits_for_all(
        make_stack, control_plane, report_timing):
    stack = make_stack()
    stack.start_control_plane()
    upstream = stack.add_upstream("base")
    site = stack.create_site("base", upstream)
    name = f"e2e-{stack.tag}-w"
    node = WorkersNode(stack, name, stack.cp.call("register_node", name=name)["token"])
    stack.nodes.append(node)
    node.start()
    node.wait_served(site["host"], upstream.name, timeout=30)
    stack.wait_node_in_sync(node)
    sup = node.proc.popen.pid
    workers = wait_until(lambda: node.pids() or None, 10, "worker pids")[0]
    assert len(workers) == 2 and sup not in workers
    assert serve_until_both(node, site["host"], upstream.name) == set(workers)

    # one control-plane connection for the node: the supervisor's; the record says workers=2
    rec = stack.node_record(node)
    assert rec["connected"] and rec["workers"] == 2, rec
    assert sockets_to(sup, stack.cp_port) == 1
    assert [sockets_to(w, stack.cp_port) for w in workers] == [0, 0]

    # a change through the service layer reaches both workers
    later = stack.add_upstream("new")
    started = time.monotonic()
    change = stack.create_site("new", later)
    node.wait_served(change["host"], later.name, timeout=10)
    assert serve_until_both(node, change["host"], later.name) == set(workers)
    report_timing(f"[{control_plane.mode}] change -> served by both workers",
                  time.monotonic() - started)
    stack.wait_node_in_sync(node)

    # ACK after all workers: with one worker stopped, the node never reports the new version
    os.kill(workers[1], signal.SIGSTOP)
    try:
        third = stack.add_upstream("third")
        pending = stack.create_site("third", third)
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            rec = stack.node_record(node)
            assert rec["applied_version"] != pending["version"], \
                "ACK sent while a worker had not applied"
            time.sleep(0.2)
        # the supervisor itself has validated it (its /readyz) but holds the ACK back
        assert node.readyz()["version"] == pending["version"]
    finally:
        os.kill(workers[1], signal.SIGCONT)
    state, _ = stack.wait_node_in_sync(node, timeout=15)
    assert state["node"]["applied_version"] == pending["version"]
    # once acknowledged, every worker serves it (no further waiting)
    assert serve_until_both(node, pending["host"], third.name, timeout=10) == set(workers)
    assert sockets_to(sup, stack.cp_port) == 1
    assert node.pids() == workers  # nothing restarted
