"""Route policies on the hot path (issue 17): the same route with and without them.

The small keep-alive load of ``bench/run.py`` (wrk, 64 connections, 128-byte responses
from an nginx backend, access log on) against Switchyard nodes (1 worker each, pinned
like ``bench/run.py``'s) that differ only in the route's policies:

- ``plain``: no policy;
- ``policies``: an access list of 100 IPv4 and IPv6 rules (the client matched by the
  last one), basic auth on that list (one user; every request carries the user's
  ``Authorization`` header, as a browser repeats it, so after the first verification
  each request is a cache lookup), and a rate limit keyed by client address that is
  far above what the load reaches (it never refuses, every request is counted);
- ``acl`` (``--variants plain,acl,policies``): the access list alone, to split the cost;
- ``fauth`` (``--variants plain,fauth``): forward auth asking the nginx backend
  (``GET /small``, 200: every request let through, one header copied). Each request
  then makes two upstream exchanges, so the ratio is well under 1; it has no bar.

Every node gets the same requests (with the ``Authorization`` header; a node without
basic auth just forwards it). Variants run in alternating order each round (ABBA),
``--rounds`` times, in the same run; printed: each variant's median req/s, min–max and
CPU time per request, the ratio of medians and the median and range of the per-round
ratios (bar: >= 0.9), and the ratio of CPU per request (plain / with policies: what the
throughput ratio would be on a core of its own; the least noisy figure on a busy machine).

The policies are snapshot fields defined by ``dataplane/schema.py``: access lists
(``access_lists[].rules``), basic auth (``access_lists[].users`` with PBKDF2 hashes),
rate limits (``routes[].rate_limit``) and forward auth (``routes[].forward_auth``); the
snapshot is validated with ``schema.parse_snapshot`` before any node starts.

    .venv/bin/python bench/policy_bench.py                      # 7 rounds of 5 s
    .venv/bin/python bench/policy_bench.py --rounds 9 --duration 10 --variants plain,acl,policies

Needs ``/usr/bin/wrk`` and ``/usr/sbin/nginx`` (as ``bench/run.py``). Exit status 0 when
the ratio of medians of ``policies`` and ``acl`` is at least 0.9 and no request failed,
else 1.
"""
from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import HOST, Lab, Load, Settings, cpu_times, lua_script, med, run_wrk, stop_all  # noqa: E402
from dataplane import basicauth, schema  # noqa: E402

USER, PASSWORD = "bench", "bench-password-1"
AUTHORIZATION = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
RATE_LIMIT = {"rate": 1_000_000.0, "burst": 1_000_000, "key": "client_ip"}  # never reached by the load


RULES = 100
BARRED = ("acl", "policies")  # the variants with the >= 0.9 bar


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


def add_policies(snap: dict, acl: bool = True, auth: bool = True, limit: bool = True,
                 forward_auth_url: str | None = None) -> list[str]:
    """Put the policies on ``snap``'s first route; returns the names of those put."""
    used = []
    route = snap["routes"][0]
    if acl:
        lst = access_list()
        used.append(f"access list of {len(lst['rules'])} rules")
        if auth:
            lst["users"] = [{"username": USER, "password_hash": basicauth.make_hash(PASSWORD)}]
            used.append("basic auth")
        snap["access_lists"] = [lst]
        route["access_list"] = lst["id"]
    if limit:
        route["rate_limit"] = dict(RATE_LIMIT)
        used.append(f"rate limit {RATE_LIMIT['rate']:.0f}/s per client address")
    if forward_auth_url:
        route["forward_auth"] = {"url": forward_auth_url, "response_headers": ["Content-Type"], "timeout": 5}
        used.append("forward auth")
    schema.parse_snapshot(snap)  # refused here rather than by the node
    return used


VARIANTS = {"plain": {}, "acl": {"auth": False, "limit": False}, "policies": {},
            "fauth": {"acl": False, "limit": False}}


class PolicyLab(Lab):
    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.used: dict[str, list[str]] = {}

    def snapshot(self, routes: int = 1, name: str = "snapshot") -> Path:
        path = super().snapshot(routes, name)
        variant = name.rsplit("-", 1)[-1]
        if variant != "plain":
            snap = json.loads(path.read_text())
            url = f"http://127.0.0.1:{self.backend.port}/small" if variant == "fauth" else None
            self.used[variant] = add_policies(snap, **VARIANTS[variant], forward_auth_url=url)
            path.write_text(json.dumps(snap))
        return path


def raw_get(port: int, headers: dict[str, str]) -> int:
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", "/small", headers={"Host": HOST, **headers})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def check(lab: PolicyLab, name: str, port: int) -> None:
    """The node answers the bench's request with 200; with basic auth on, a request
    without credentials gets 401 (the policy is live, not just configured)."""
    status = raw_get(port, {"Authorization": AUTHORIZATION})
    if status != 200:
        raise RuntimeError(f"{name}: the bench request got {status}")
    if "basic auth" in lab.used.get(name, []):
        status = raw_get(port, {})
        if status != 401:
            raise RuntimeError(f"{name}: a request without credentials got {status}, not 401")


def auth_script(lab: PolicyLab) -> Path:
    path = lua_script(lab.tmp)
    text = path.read_text()
    path.write_text(f'wrk.headers["Authorization"] = "{AUTHORIZATION}"\n' + text)
    return path


def measured(lab: PolicyLab, t, load: Load, duration: int, script: Path) -> dict:
    """One wrk run with the node's CPU time per request (user + system, all its
    processes): the figure a busy machine disturbs least."""
    u0, s0 = cpu_times(t.pids())
    r = run_wrk(lab, t.port, load, duration, script)
    u1, s1 = cpu_times(t.pids())
    r["cpu_us_per_req"] = ((u1 - u0) + (s1 - s0)) / r["requests"] * 1e6 if r["requests"] else None
    return r


def spread(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}" if values else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--variants", default="plain,policies", help="plain, acl, policies, fauth (comma separated)")
    args = ap.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "plain" not in variants or any(v not in VARIANTS for v in variants):
        ap.error(f"--variants: plain and any of {', '.join(VARIANTS)}")
    lab = PolicyLab(Settings(rounds=args.rounds, duration=args.duration, conns=args.connections))
    try:
        lab.start_backend()
        nodes = {v: lab.start_switchyard(f"switchyard-{v}") for v in variants}
        for v, t in nodes.items():
            check(lab, v, t.port)
        load = Load("small_keepalive", "", "wrk", conns=args.connections)
        script = auth_script(lab)
        for t in nodes.values():  # warm-up (and the one password verification)
            run_wrk(lab, t.port, load, 2, script)
        runs: dict[str, list] = {v: [] for v in nodes}
        for n in range(args.rounds):
            order = list(nodes) if n % 2 == 0 else list(reversed(nodes))
            for v in order:
                runs[v].append(measured(lab, nodes[v], load, args.duration, script))
        rps = {v: med([r["rps"] for r in rs]) for v, rs in runs.items()}
        p99 = {v: med([r["p99_us"] for r in rs]) for v, rs in runs.items()}
        cpu = {v: med([r["cpu_us_per_req"] for r in rs]) for v, rs in runs.items()}
        errors = {v: sum(r["errors"] for r in rs) for v, rs in runs.items()}
        print(f"small keep-alive, {args.connections} connections, Host {HOST}, {args.rounds} rounds x "
              f"{args.duration} s, alternating (ABBA), medians; the machine's other load is not controlled")
        for v in nodes:
            what = ", ".join(lab.used.get(v, [])) or "no policy"
            print(f"  {v:>9}: {rps[v]:9.0f} req/s (runs {spread([r['rps'] for r in runs[v]])})  "
                  f"p99 {p99[v] / 1000:6.2f} ms  CPU {cpu[v]:5.1f} us/req  errors {errors[v]}  [{what}]")
        ratios = {}
        for v in nodes:
            if v == "plain":
                continue
            per_round = [a["rps"] / b["rps"] for a, b in zip(runs[v], runs["plain"]) if b["rps"]]
            ratios[v] = {"of_medians": rps[v] / rps["plain"] if rps["plain"] else 0.0,
                         "per_round_median": statistics.median(per_round) if per_round else 0.0,
                         "per_round_min": min(per_round, default=0.0), "per_round_max": max(per_round, default=0.0)}
            ratios[v]["cpu"] = cpu["plain"] / cpu[v] if cpu[v] else 0.0
            r = ratios[v]
            bar = "; bar >= 0.9" if v in BARRED else "; no bar"
            print(f"  ratio {v}/plain: {r['of_medians']:.3f} (per round: median {r['per_round_median']:.3f}, "
                  f"{r['per_round_min']:.3f}-{r['per_round_max']:.3f}{bar}); by CPU per request "
                  f"(plain / {v}): {r['cpu']:.3f}")
        for v in nodes:
            print(f"  {v:>9} runs: " + " ".join(f"{r['rps']:.0f}" for r in runs[v]))
        print(json.dumps({"rps": rps, "p99_us": p99, "cpu_us_per_req": cpu, "errors": errors, "ratios": ratios,
                          "policies": lab.used, "runs": {v: [r["rps"] for r in rs] for v, rs in runs.items()}}))
        below = [v for v in BARRED if v in ratios and ratios[v]["of_medians"] < 0.9]
        return 0 if not below and not any(errors.values()) else 1
    finally:
        stop_all()
        lab.close()


if __name__ == "__main__":
    sys.exit(main())
