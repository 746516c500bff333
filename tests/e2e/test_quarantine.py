"""Quarantine end to end, with real processes in both modes: Daphne, two
data-plane nodes and loopback upstreams.

Version skew is simulated the way a control plane of another software version would
cause it: a version is stored directly (no gate) that holds tenant A's route in a form
these nodes refuse, next to tenant B's site. The nodes NACK it; the route is
quarantined once, the rest is published and ACKed by every node, tenant B's next
change reaches every node, and A's route comes back when A saves it again. The time
from the NACK to the version every node ACKed is reported in the "Switchyard
timings" section (``bench/quarantine_bench.py`` gives its median over several runs).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import CPShell, wait_until

pytestmark = pytest.mark.e2e

QSHELL = Path(__file__).with_name("quarantineshell.py")
# NACK -> quarantine -> publish -> hint -> coalesced push (~150 ms) -> apply -> ACK on
# each node; 10 s leaves room for a loaded 2-core CI machine.
DEADLINE = 10.0


def in_sync_everywhere(stack, nodes, shell):
    """The latest version once every node reports it applied (version and hash)."""
    latest = shell.call("latest")
    if all((rec["applied_version"], rec["applied_hash"]) == (latest["version"], latest["hash"])
           for rec in (stack.node_record(n) for n in nodes)):
        return latest
    return None


def test_a_rejected_route_is_quarantined_and_the_rest_reaches_every_node(make_stack, control_plane,
                                                                         report_timing):
    stack = make_stack()
    shell = CPShell(control_plane.env, stack.root / "quarantineshell.log", script=QSHELL)
    try:
        run(stack, shell, control_plane.mode, report_timing)
    finally:
        shell.close()


def run(stack, shell, mode, report_timing):
    stack.start_control_plane()
    owner, other = f"qa-{stack.tag}", f"qb-{stack.tag}"
    up_a, up_b = stack.add_upstream("a"), stack.add_upstream("b")
    site_a = shell.call("tenant_site", tenant=owner, name="shop", port=up_a.port)
    site_b = shell.call("tenant_site", tenant=other, name="blog", port=up_b.port)
    for tenant in (owner, other, None):
        shell.call("tenant_channel", tenant=tenant, name=f"{tenant or 'platform'}-{stack.tag}")
    nodes = [stack.add_node(), stack.add_node()]
    for node in nodes:
        node.wait_served(site_a["host"], up_a.name, timeout=30)
        node.wait_served(site_b["host"], up_b.name, timeout=30)
    wait_until(lambda: in_sync_everywhere(stack, nodes, shell), 30, "both nodes on the latest version",
               on_timeout=stack.logs)

    skewed = shell.call("store_skewed_version", route=site_a["route"])

    def newer_version_everywhere():
        latest = in_sync_everywhere(stack, nodes, shell)
        return latest if latest and latest["version"] > skewed["version"] else None
    accepted, _ = wait_until(newer_version_everywhere, DEADLINE, "every node to ACK a version without the route",
                             interval=0.05, on_timeout=stack.logs)
    timing = shell.call("nack_to_accepted", rejected=skewed["version"], accepted=accepted["version"],
                        nodes=[n.name for n in nodes])
    assert timing["nacks"] >= 1
    report_timing(f"[{mode}] NACK -> next version ACKed by both nodes", timing["seconds"])

    state = shell.call("quarantine_state")
    mine = [q for q in state["quarantines"] if q["tenant"] == owner]
    assert len(mine) == 1, state["quarantines"]
    assert (mine[0]["kind"], mine[0]["object_id"], mine[0]["version"]) == ("route", site_a["route"],
                                                                           skewed["version"])
    assert ".response_headers.set[0].value: " in mine[0]["error"]  # the node's own error
    assert site_a["route"] not in state["routes"] and site_b["route"] in state["routes"]
    audit = [e for e in state["audit"] if e["tenant"] == owner]
    assert len(audit) == 1 and audit[0]["actor"] == "system"
    assert (audit[0]["object_type"], audit[0]["object_id"]) == ("route", str(site_a["route"]))
    assert audit[0]["config_version"] == accepted["version"]
    alerts = [a for a in state["alerts"] if a["tenant"] == owner]
    assert len(alerts) == 1 and "quarantined" in alerts[0]["subject"]
    assert {f"{owner}-{stack.tag}", f"platform-{stack.tag}"} <= set(alerts[0]["queued_for"])
    assert f"{other}-{stack.tag}" not in alerts[0]["queued_for"]
    assert not [a for a in state["alerts"] if a["tenant"] is None and a["data"].get("version") == skewed["version"]]
    for node in nodes:
        assert node.readyz() == {"version": accepted["version"], "hash": accepted["hash"]}
        assert node.get(site_a["host"]).status == 404  # left out: the owner pays, nobody else
        assert node.get(site_b["host"]).status == 200

    # Another tenant's change right after reaches every node.
    up_c = stack.add_upstream("c")
    site_c = shell.call("tenant_site", tenant=other, name="news", port=up_c.port)
    for node in nodes:
        node.wait_served(site_c["host"], up_c.name, timeout=DEADLINE)

    # The owner saves the route again: the quarantine is lifted, the route is back everywhere.
    shell.call("touch_route", route=site_a["route"])
    for node in nodes:
        node.wait_served(site_a["host"], up_a.name, timeout=DEADLINE)
    wait_until(lambda: in_sync_everywhere(stack, nodes, shell), DEADLINE, "both nodes on the owner's fix",
               on_timeout=stack.logs)
