"""An access list of 100 CIDRs on the hot path: the cost of the check, measured.

The small keep-alive load of ``bench/run.py`` (wrk, 128-byte responses from an nginx
backend, access log on) against two Switchyard nodes (1 worker each) that differ only
in the route: ``plain`` has no policy, ``acl`` has an access list of 100 IPv4 and IPv6
rules (99 that do not match the client, then ``allow 127.0.0.0/8``, default deny). The
two are measured alternately, ``--rounds`` times, in the same run; the figure is the
ratio of the medians (bar: at least 0.9).

    .venv/bin/python bench/access_list_bench.py                 # 5 rounds of 5 s, 64 connections
    .venv/bin/python bench/access_list_bench.py --rounds 3 --duration 10

Needs ``/usr/bin/wrk`` and ``/usr/sbin/nginx`` (as ``bench/run.py``).
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import HOST, Lab, Load, Settings, lua_script, med, run_wrk, stop_all  # noqa: E402

RULES = 100


def access_list() -> dict:
    """100 rules; the client (127.0.0.1) is matched by the last one only."""
    rules = []
    for i in range(RULES - 1):
        if i % 3 == 2:
            rules.append({"action": "deny", "cidr": f"2001:db8:{i:x}::/48"})
        else:
            net = ipaddress.ip_network(f"{10 + i // 64}.{(i * 4) % 256}.0.0/16")
            rules.append({"action": "allow" if i % 2 else "deny", "cidr": str(net)})
    rules.append({"action": "allow", "cidr": "127.0.0.0/8"})
    return {"id": 1, "name": "bench-acl", "tenant": None, "rules": rules, "default": "deny"}


class AclLab(Lab):
    def snapshot(self, routes: int = 1, name: str = "snapshot") -> Path:
        path = super().snapshot(routes, name)
        if name.endswith("-acl"):
            snap = json.loads(path.read_text())
            snap["access_lists"] = [access_list()]
            snap["routes"][0]["access_list"] = 1
            path.write_text(json.dumps(snap))
        return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    lab = AclLab(Settings(rounds=args.rounds, duration=args.duration, conns=args.connections))
    try:
        lab.start_backend()
        nodes = {"plain": lab.start_switchyard("switchyard-plain"),
                 "acl": lab.start_switchyard("switchyard-acl")}
        for t in nodes.values():
            lab.check(t)
        load = Load("small_keepalive", "", "wrk", conns=args.connections)
        script = lua_script(lab.tmp)
        for t in nodes.values():  # warm-up
            run_wrk(lab, t.port, load, 2, script)
        runs: dict[str, list] = {k: [] for k in nodes}
        for _ in range(args.rounds):
            for key, t in nodes.items():
                runs[key].append(run_wrk(lab, t.port, load, args.duration, script))
        rps = {k: med([r["rps"] for r in v]) for k, v in runs.items()}
        p99 = {k: med([r["p99_us"] for r in v]) for k, v in runs.items()}
        errors = {k: sum(r["errors"] for r in v) for k, v in runs.items()}
        ratio = rps["acl"] / rps["plain"] if rps["plain"] else 0.0
        print(f"small keep-alive, {args.connections} connections, Host {HOST}, {args.rounds} x {args.duration} s, "
              "medians, alternating")
        for key in nodes:
            print(f"  {key:>6}: {rps[key]:9.0f} req/s  p99 {p99[key] / 1000:6.2f} ms  errors {errors[key]}")
        print(f"  ratio acl/plain: {ratio:.3f} (bar: >= 0.9)")
        for key in nodes:
            print(f"  {key:>6} runs: " + " ".join(f"{r['rps']:.0f}" for r in runs[key]))
        print(json.dumps({"rps": rps, "p99_us": p99, "errors": errors, "ratio": ratio, "rules": RULES}))
        return 0 if ratio >= 0.9 and not any(errors.values()) else 1
    finally:
        stop_all()
        lab.close()


if __name__ == "__main__":
    sys.exit(main())
