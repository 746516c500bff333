"""Basic auth: what a verified (cached) Authorization header costs against a verification.

An in-process node (``dataplane.forwarder.ProxyServer`` on loopback, the same code as
``python -m dataplane``) in front of a small backend; one keep-alive client sends
``--requests`` sequential requests per variant, alternating variants each round:

- ``none``: the route has no access list;
- ``cached``: an access list with one basic-auth user; every request carries the same
  valid header, as a browser repeats it (one PBKDF2 verification, then dict lookups);
- ``uncached``: the same, but the node's verification cache is emptied before each
  request, so every request pays a PBKDF2 verification (in the thread pool).

Printed: the median per-request latency of each variant, the PBKDF2 computations the
node made (``basicauth.STATS``), and the single ``check_password`` cost on this machine.

    .venv/bin/python bench/basic_auth_bench.py                   # 5 rounds of 200 requests
    .venv/bin/python bench/basic_auth_bench.py --rounds 3 --requests 500
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataplane import basicauth, schema  # noqa: E402
from tests.dataplane.helpers import Backend, Client, Proxy, pool, route, snapshot  # noqa: E402

PASSWORD = "bench password"
HEADER = ("Authorization", "Basic " + base64.b64encode(f"bench:{PASSWORD}".encode()).decode())


def bench_snapshot(port: int) -> dict:
    snap = snapshot([pool(1, [(1, "127.0.0.1", port)])],
                    [route(1, ["none.bench"], 1), route(2, ["auth.bench"], 1, access_list=1)])
    snap["access_lists"] = [{"id": 1, "name": "bench", "tenant": None, "rules": [], "default": "allow",
                             "users": [{"username": "bench", "password_hash": basicauth.make_hash(PASSWORD)}]}]
    return snap


async def run_variant(proxy: Proxy, variant: str, n: int) -> list[float]:
    host = "none.bench" if variant == "none" else "auth.bench"
    auth = next(iter(basicauth.BasicAuth._shared.values()))
    c = await Client(proxy.port).connect()
    times = []
    try:
        for _ in range(n):
            if variant == "uncached":
                auth.cache.clear()
            t0 = time.perf_counter()
            r = await c.request(path="/", host=host, headers=[HEADER])
            times.append(time.perf_counter() - t0)
            if r.status != 200:
                raise RuntimeError(f"{variant}: status {r.status}")
    finally:
        c.close()
    return times


async def main_async(args) -> dict:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(  # the backend's handlers cancelled at the end: not worth a traceback
        lambda lp, ctx: None if isinstance(ctx.get("exception"), asyncio.CancelledError)
        else lp.default_exception_handler(ctx))
    backend = await Backend().start()
    proxy = await Proxy(bench_snapshot(backend.port)).start()
    variants = ("none", "cached", "uncached")
    samples: dict[str, list[float]] = {v: [] for v in variants}
    hashes: dict[str, int] = {v: 0 for v in variants}
    try:
        for v in variants:  # warm-up
            await run_variant(proxy, v, 5)
        for i in range(args.rounds):
            order = variants if i % 2 == 0 else tuple(reversed(variants))
            for v in order:
                before = basicauth.STATS["ok"] + basicauth.STATS["failed"]
                samples[v] += await run_variant(proxy, v, args.requests)
                hashes[v] += basicauth.STATS["ok"] + basicauth.STATS["failed"] - before
    finally:
        await proxy.close()
        await backend.close()
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in rest:  # the backend's connection handlers: ended quietly
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
    parsed = schema.parse_password_hash(basicauth.make_hash(PASSWORD))
    t0 = time.perf_counter()
    for _ in range(5):
        basicauth.check_password(PASSWORD.encode(), parsed)
    one_hash = (time.perf_counter() - t0) / 5
    return {"median_ms": {v: statistics.median(s) * 1000 for v, s in samples.items()},
            "requests": {v: len(s) for v, s in samples.items()}, "hashes": hashes,
            "check_password_ms": one_hash * 1000, "iterations": basicauth.ITERATIONS}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=200, help="sequential requests per variant and round")
    args = ap.parse_args()
    out = asyncio.run(main_async(args))
    med = out["median_ms"]
    print(f"basic auth, one keep-alive client, {args.rounds} rounds x {args.requests} requests, medians")
    for v in ("none", "cached", "uncached"):
        print(f"  {v:>8}: {med[v]:8.3f} ms/request  PBKDF2 computations: {out['hashes'][v]}"
              f" / {out['requests'][v]} requests")
    print(f"  one check_password ({out['iterations']} iterations): {out['check_password_ms']:.1f} ms")
    print(f"  cached - none: {med['cached'] - med['none']:+.3f} ms; uncached / cached: "
          f"{med['uncached'] / med['cached']:.1f}x")
    print(json.dumps(out))
    ok = out["hashes"]["cached"] == 0 and out["hashes"]["uncached"] == out["requests"]["uncached"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
