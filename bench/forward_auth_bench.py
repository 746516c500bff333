"""Forward auth on the hot path: what a subrequest per request costs, measured.

The small keep-alive load of ``bench/run.py`` (wrk, 128-byte responses from an nginx
backend, access log on) against two Switchyard nodes (1 worker each) that differ only
in the route: ``plain`` has no policy, ``fauth`` asks forward auth before every request
(``GET /small`` on the same nginx, which answers 200: every request is let through,
with one header copied). The two are measured alternately, ``--rounds`` times, in the
same run; the figure is the ratio of the medians. A forward-auth request makes two
upstream exchanges instead of one, so expect well under 1; there is no bar, the
figure is for comparing changes.

    .venv/bin/python bench/forward_auth_bench.py                 # 5 rounds of 5 s, 64 connections
    .venv/bin/python bench/forward_auth_bench.py --rounds 3 --duration 10

Needs ``/usr/bin/wrk`` and ``/usr/sbin/nginx`` (as ``bench/run.py``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import HOST, Lab, Load, Settings, lua_script, med, run_wrk, stop_all  # noqa: E402


class ForwardAuthLab(Lab):
    def snapshot(self, routes: int = 1, name: str = "snapshot") -> Path:
        path = super().snapshot(routes, name)
        if name.endswith("-fauth"):
            snap = json.loads(path.read_text())
            snap["routes"][0]["forward_auth"] = {"url": f"http://127.0.0.1:{self.backend.port}/small",
                                                 "response_headers": ["Content-Type"], "timeout": 5}
            path.write_text(json.dumps(snap))
        return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    lab = ForwardAuthLab(Settings(rounds=args.rounds, duration=args.duration, conns=args.connections))
    try:
        lab.start_backend()
        nodes = {"plain": lab.start_switchyard("switchyard-plain"),
                 "fauth": lab.start_switchyard("switchyard-fauth")}
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
        ratio = rps["fauth"] / rps["plain"] if rps["plain"] else 0.0
        print(f"small keep-alive, {args.connections} connections, Host {HOST}, {args.rounds} x {args.duration} s, "
              "medians, alternating")
        for key in nodes:
            print(f"  {key:>6}: {rps[key]:9.0f} req/s  p99 {p99[key] / 1000:6.2f} ms  errors {errors[key]}")
        print(f"  ratio fauth/plain: {ratio:.3f}")
        for key in nodes:
            print(f"  {key:>6} runs: " + " ".join(f"{r['rps']:.0f}" for r in runs[key]))
        print(json.dumps({"rps": rps, "p99_us": p99, "errors": errors, "ratio": ratio}))
        return 0 if not any(errors.values()) else 1
    finally:
        stop_all()
        lab.close()


if __name__ == "__main__":
    sys.exit(main())
