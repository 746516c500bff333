"""Control-plane side of the harness, run as its own process with Django configured from
the environment the harness gives it (temp ``SWITCHYARD_VAR_DIR``; ``DATABASE_URL`` and
``REDIS_URL`` in production mode). Each subcommand prints one JSON object on its last
line of stdout.

``compile --sizes 1000,10000``  bulk-insert routes (half exact hosts, half wildcards) and
    time ``compile_snapshot`` (DB rows → snapshot JSON), ``schema.parse_snapshot`` (the
    validation the control plane runs before publishing) and ``NodeState.apply`` (what a
    node does with it: parse + build the routing table and pools, then one collection),
    the apply in a Django-free subprocess (``apply``) so it sees a node's heap.
``apply --snapshot FILE``  the apply timing alone (no Django).
``setup --backend-port P --nodes a,b,c``  a pool and a route through the service layer
    (version 1) and the three nodes registered; prints their tokens.
``changes --count 50 --nodes a,b,c``  ``count`` route edits through
    ``controlplane.proxy.services``, one after another; for each, the time from just before
    the service call until every node's ACK of the resulting version is recorded in the
    database (``Node.applied_version``, polled every ``--poll`` seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _django():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    import django
    django.setup()


def _median(values):
    return statistics.median(values) if values else None


def _pct(values, p):
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def route_hosts(i: int) -> list[str]:
    """Route ``i``'s hosts: even routes an exact host, odd ones a wildcard."""
    return [f"h{i}.bench.test"] if i % 2 == 0 else [f"*.w{i}.bench.test"]


def cmd_compile(args) -> dict:
    _django()
    import subprocess
    import tempfile

    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from controlplane.proxy.models import Pool, Route, Target
    from controlplane.publishing.compiler import compile_snapshot
    from dataplane import schema

    pool = Pool.objects.create(name="bench")
    Target.objects.create(pool=pool, host="127.0.0.1", port=args.backend_port)
    have = 0
    out = {}
    for size in sorted(int(s) for s in args.sizes.split(",")):
        Route.objects.bulk_create(
            [Route(name=f"r{i}", hosts=route_hosts(i), pool=pool, path="/", path_type="prefix")
             for i in range(have, size)], batch_size=2000)
        have = size
        rows = {"compile_ms": [], "parse_ms": [], "hash_ms": []}
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            snap = compile_snapshot()
            t1 = time.perf_counter()
            schema.parse_snapshot(snap)
            t2 = time.perf_counter()
            digest = schema.snapshot_hash(snap)
            t3 = time.perf_counter()
            assert len(snap["routes"]) == size, len(snap["routes"])
            rows["compile_ms"].append((t1 - t0) * 1e3)
            rows["parse_ms"].append((t2 - t1) * 1e3)
            rows["hash_ms"].append((t3 - t2) * 1e3)
        out[str(size)] = {k: _median(v) for k, v in rows.items()}
        out[str(size)]["snapshot_bytes"] = len(schema.canonical_json(snap))
        # The apply is timed in a process like a node's (no Django): its heap, which the
        # collection after each apply walks, is a node's heap, not this one's.
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump({"version": 1, "hash": digest, "snapshot": snap}, f)
            f.flush()
            res = subprocess.run([sys.executable, "-m", "bench.cpbench", "apply", "--snapshot",
                                  f.name, "--repeat", str(args.repeat)],
                                 capture_output=True, text=True, check=True, cwd=ROOT)
        out[str(size)].update(json.loads(res.stdout.strip().splitlines()[-1]))
    return {"repeat": args.repeat, "sizes": out}


def cmd_apply(args) -> dict:
    """NodeState.apply of a snapshot file on fresh node states (medians), then once more
    on a node already running it (the usual case), in this Django-free process."""
    from dataplane.applier import NodeState
    from dataplane.runtime import load_snapshot_file

    version, digest, snap = load_snapshot_file(args.snapshot)
    wall, reported = [], []
    for rep in range(args.repeat):
        state = NodeState(node_name="bench")
        t0 = time.perf_counter()
        reported.append(state.apply(version + rep, digest, snap))
        wall.append((time.perf_counter() - t0) * 1e3)
    t0 = time.perf_counter()
    state.apply(version + args.repeat, digest, snap)
    return {"apply_ms": _median(wall), "apply_reported_ms": _median(reported),
            "reapply_ms": (time.perf_counter() - t0) * 1e3}


def cmd_setup(args) -> dict:
    _django()
    from controlplane.proxy import services
    from controlplane.publishing.models import Node

    actor = services.Actor.system()
    pool = services.create_pool(actor, name="bench", note="bench",
                                targets=[{"host": "127.0.0.1", "port": args.backend_port,
                                          "weight": 1, "state": "enabled"}])
    route = services.create_route(actor, name="bench", hosts=["bench.localhost"], path="/",
                                  path_type="prefix", pool=pool, note="bench")
    tokens = {}
    for name in args.nodes.split(","):
        _, tokens[name] = Node.register(name)
    return {"route": route.id, "tokens": tokens}


def cmd_changes(args) -> dict:
    _django()
    from django.db import close_old_connections

    from controlplane.proxy import services
    from controlplane.proxy.models import Route
    from controlplane.publishing.models import ConfigVersion, Node

    names = args.nodes.split(",")
    actor = services.Actor.system()

    def all_at(version: int) -> bool:
        close_old_connections()
        return Node.objects.filter(name__in=names, applied_version__gte=version).count() == len(names)

    def wait(version: int, timeout: float) -> float | None:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if all_at(version):
                return time.monotonic()
            time.sleep(args.poll)
        return None

    latest = ConfigVersion.objects.order_by("-number").first().number
    if wait(latest, args.timeout) is None:
        state = list(Node.objects.filter(name__in=names).values("name", "connected", "applied_version"))
        return {"error": f"nodes never reached version {latest}: {state}"}
    route = Route.objects.get(pk=args.route)
    rng = random.Random(7)
    totals, service_ms, lost = [], [], 0
    for i in range(args.count):
        t0 = time.monotonic()
        services.update_route(actor, route, priority=(route.priority + 1) % 1000, note=f"bench change {i}")
        t1 = time.monotonic()
        version = ConfigVersion.objects.order_by("-number").first().number
        t2 = wait(version, args.timeout)
        if t2 is None:
            lost += 1
            continue
        totals.append((t2 - t0) * 1e3)
        service_ms.append((t1 - t0) * 1e3)
        time.sleep(rng.uniform(args.gap, args.gap * 6))  # random phase vs. polls and heartbeats
    return {"changes": args.count, "acked": len(totals), "timed_out": lost, "nodes": len(names),
            "median_ms": _median(totals), "p99_ms": _pct(totals, 99), "max_ms": max(totals) if totals else None,
            "min_ms": min(totals) if totals else None, "service_call_median_ms": _median(service_ms),
            "poll_s": args.poll}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench/cpbench.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compile")
    c.add_argument("--sizes", default="1000,10000")
    c.add_argument("--repeat", type=int, default=3)
    c.add_argument("--backend-port", type=int, default=9)
    s = sub.add_parser("setup")
    s.add_argument("--backend-port", type=int, required=True)
    s.add_argument("--nodes", required=True)
    ch = sub.add_parser("changes")
    ch.add_argument("--count", type=int, default=50)
    ch.add_argument("--nodes", required=True)
    ch.add_argument("--route", type=int, required=True)
    ch.add_argument("--timeout", type=float, default=30.0)
    ch.add_argument("--poll", type=float, default=0.005)
    ch.add_argument("--gap", type=float, default=0.05, help="pause between changes: uniform in [gap, 6 x gap] s")
    ap_ = sub.add_parser("apply")
    ap_.add_argument("--snapshot", required=True)
    ap_.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    result = {"compile": cmd_compile, "setup": cmd_setup, "changes": cmd_changes,
              "apply": cmd_apply}[a.cmd](a)
    print(json.dumps(result), flush=True)
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
