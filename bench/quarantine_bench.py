"""From a NACK to the next version every node ACKed.

Stands up the e2e stack (``tests/e2e/harness.py``): Daphne, ``--nodes`` data-plane
nodes and two tenants' sites on loopback upstreams. Each round stores a version the
nodes reject (one tenant's route in a form they refuse, as a control plane of another
software version would make it; ``tests/e2e/quarantineshell.py``), waits until every
node ACKed the version published without that route, takes the time from the first
NACK to the last node's ACK from the nodes' own records (``NodeEvent``), then lifts
the quarantine (the owner saves the route) and waits until every node runs it again.

    .venv/bin/python bench/quarantine_bench.py                          # embedded, 2 nodes, 7 rounds
    .venv/bin/python bench/quarantine_bench.py --mode production --nodes 3 --rounds 9

``production`` needs PostgreSQL and Redis (``SWITCHYARD_TEST_POSTGRES_URL`` /
``SWITCHYARD_TEST_REDIS_URL`` as for the tests, else the local defaults).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import make_control_plane  # noqa: E402
from tests.e2e.harness import CPShell, Stack, wait_until  # noqa: E402
from tests.e2e.test_quarantine import QSHELL, in_sync_everywhere  # noqa: E402

DEADLINE = 30.0


def one_round(stack, nodes, shell, route) -> float:
    skewed = shell.call("store_skewed_version", route=route)

    def newer_version_everywhere():
        latest = in_sync_everywhere(stack, nodes, shell)
        return latest if latest and latest["version"] > skewed["version"] else None
    accepted, _ = wait_until(newer_version_everywhere, DEADLINE, "every node on the version without the route",
                             interval=0.05, on_timeout=stack.logs)
    seconds = shell.call("nack_to_accepted", rejected=skewed["version"], accepted=accepted["version"],
                         nodes=[n.name for n in nodes])["seconds"]
    shell.call("touch_route", route=route)
    wait_until(lambda: in_sync_everywhere(stack, nodes, shell), DEADLINE, "every node on the owner's fix",
               interval=0.05, on_timeout=stack.logs)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("embedded", "production"), default="embedded")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="quarantine-bench-") as tmp:
        cp, cleanup = make_control_plane(args.mode, Path(tmp) / "cp")
        stack = Stack(cp, Path(tmp) / "stack")
        shell = CPShell(cp.env, Path(tmp) / "quarantineshell.log", script=QSHELL)
        try:
            stack.start_control_plane()
            up_a, up_b = stack.add_upstream("a"), stack.add_upstream("b")
            site = shell.call("tenant_site", tenant=f"qa-{stack.tag}", name="shop", port=up_a.port)
            shell.call("tenant_site", tenant=f"qb-{stack.tag}", name="blog", port=up_b.port)
            nodes = [stack.add_node() for _ in range(args.nodes)]
            wait_until(lambda: in_sync_everywhere(stack, nodes, shell), DEADLINE, "every node in sync",
                       on_timeout=stack.logs)
            times = [one_round(stack, nodes, shell, site["route"]) for _ in range(args.rounds)]
        finally:
            shell.close()
            stack.close()
            cleanup()
    print(f"quarantine [{args.mode}, {args.nodes} nodes]: NACK -> next version ACKed by every node, "
          f"{args.rounds} rounds")
    print("  each (s): " + " ".join(f"{t:.3f}" for t in times))
    print(f"  median {statistics.median(times):.3f} s, min {min(times):.3f} s, max {max(times):.3f} s")


if __name__ == "__main__":
    main()
