"""How well a rate limit holds across nodes: the admitted rate per traffic split.

A private production stack (Daphne on a fresh PostgreSQL database and a redis-server of
its own, 3 real nodes, one upstream; the e2e harness of tests/e2e/harness.py) gets a
route limited to ``--rate`` requests per second (burst ``--burst``, key none). For each
split of the traffic over the 3 nodes (e.g. 70/20/10), an asyncio client offers
``--offered`` times the limit on keep-alive connections, waits ``--warmup`` seconds,
then counts the 200s and 429s of the requests sent during ``--seconds`` seconds. The
figure is the admitted rate (200s per second) and its error against the limit (the bar:
within 10 %).

    .venv/bin/python bench/ratelimit_accuracy.py                      # 4 splits, 10 s each
    .venv/bin/python bench/ratelimit_accuracy.py --splits 70/20/10 --seconds 10

Needs PostgreSQL (SWITCHYARD_TEST_POSTGRES_URL or postgresql://postgres@127.0.0.1:5432/postgres)
and redis-server on PATH.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_SPLITS = ("100/0/0", "70/20/10", "34/33/33", "50/50/0")


async def offer(targets: list[tuple], seconds: float, warmup: float,
                max_inflight: int = 200) -> list[dict]:
    """Offer ``rate`` requests per second to each (port, host, rate[, headers]) at once, on keep-alive
    connections, at evenly spaced send times; count the statuses of the requests sent
    between ``warmup`` and ``warmup + seconds``. Returns per target {"sent", "200",
    "429", "other", "skipped"} (skipped: sends dropped because ``max_inflight`` requests
    of that target were still waiting — the machine could not keep up)."""
    import aiohttp

    start = time.monotonic() + 0.2
    window = (start + warmup, start + warmup + seconds)
    results = [{"sent": 0, "200": 0, "429": 0, "other": 0, "skipped": 0} for _ in targets]

    async def one(session, url, headers, counts, counted):
        try:
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError):
            status = 0
        if counted:
            key = str(status) if status in (200, 429) else "other"
            counts[key] += 1

    async def drive(i, port, host, rate, extra=None):
        if rate <= 0:
            return
        headers = {"Host": host, **(extra or {})}
        counts = results[i]
        url = f"http://127.0.0.1:{port}/"
        conn = aiohttp.TCPConnector(limit=64, force_close=False)
        timeout = aiohttp.ClientTimeout(total=30)
        tasks: set = set()
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            n = 0
            while True:
                at = start + n / rate
                if at >= window[1]:
                    break
                delay = at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                n += 1
                counted = window[0] <= at < window[1]
                if len(tasks) >= max_inflight:
                    if counted:
                        counts["skipped"] += 1
                    continue
                if counted:
                    counts["sent"] += 1
                t = asyncio.ensure_future(one(session, url, headers, counts, counted))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=30)

    await asyncio.gather(*(drive(i, *t) for i, t in enumerate(targets)))
    return results


def admitted_rate(results: list[dict], seconds: float) -> float:
    return sum(r["200"] for r in results) / seconds


def split_rates(split: str, total: float) -> list[float]:
    parts = [float(p) for p in split.split("/")]
    return [total * p / sum(parts) for p in parts]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--offered", type=float, default=2.0, help="offered load as a multiple of the rate")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--splits", nargs="*", default=list(DEFAULT_SPLITS))
    args = ap.parse_args()

    from tests.conftest import POSTGRES_URL
    from tests.e2e.harness import stack_on_own_redis
    from tests.e2e.test_rate_limits import Api, limit_route, staff_token

    with tempfile.TemporaryDirectory(prefix="sy-rl-bench-") as tmp, \
            stack_on_own_redis(Path(tmp), POSTGRES_URL) as (stack, _db, _redis):
        upstream = stack.add_upstream("rl")
        site = stack.create_site("rl", upstream)
        nodes = [stack.add_node() for _ in range(3)]
        for node in nodes:
            node.wait_served(site["host"], upstream.name, timeout=60)
        api = Api(stack.cp_port, staff_token(stack.cp))
        limit_route(api, site["host"], {"rate": args.rate, "burst": args.burst, "key": "none"}, nodes)
        print(f"limit {args.rate:g} req/s (burst {args.burst}) over 3 nodes; offered "
              f"{args.offered:g}x; {args.seconds:g} s measured after {args.warmup:g} s; cpus={os.cpu_count()}")
        rows = []
        for split in args.splits:
            rates = split_rates(split, args.rate * args.offered)
            results = asyncio.run(offer([(n.http_port, site["host"], r) for n, r in zip(nodes, rates)],
                                        args.seconds, args.warmup))
            admitted = admitted_rate(results, args.seconds)
            error = (admitted - args.rate) / args.rate * 100
            per_node = " ".join(f"{r['200'] / args.seconds:.1f}" for r in results)
            skipped = sum(r["skipped"] for r in results)
            print(f"split {split:>9}: admitted {admitted:6.1f} req/s ({error:+5.1f} %)  per node "
                  f"{per_node}  429s {sum(r['429'] for r in results)}  other {sum(r['other'] for r in results)}"
                  f"{f'  skipped {skipped}' if skipped else ''}", flush=True)
            rows.append({"split": split, "admitted": round(admitted, 2), "error_percent": round(error, 2),
                         "per_node": [r["200"] / args.seconds for r in results], "results": results})
        print(json.dumps({"rate": args.rate, "burst": args.burst, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
