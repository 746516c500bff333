"""Health-check throughput: can one worker keep 1,000 targets on a 5 s interval?

Stands up N loopback HTTP targets (a few processes, each serving many 127.0.0.1
ports with asyncio), then runs check rounds over all of them on a fixed interval
inside this one process, the way a Celery worker with one slot would run the
per-pool ``check_pool`` tasks one after another. Two modes:

- ``checker``: only the probes (``controlplane.health.checker.run_checks``);
- ``task``: the whole round as the task runs it (``rounds.run_pool_round``: lease,
  probes, threshold state machine, counters and results written to the database),
  against a temporary SQLite database.

Reported per mode: check rate while on schedule, capacity (checks per busy second),
per-round duration (min/p50/max) and lag of each round's start behind its schedule.

    .venv/bin/python bench/healthcheck_bench.py                    # 1000 targets, 5 s, 4 rounds
    .venv/bin/python bench/healthcheck_bench.py --targets 1000 --pools 10 --rounds 6 --hang 100
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


# ---------------------------------------------------------------- targets

def serve_targets(count: int, hang: int, conn) -> None:
    """Child process: ``count`` listeners on 127.0.0.1; the first ``hang`` never answer."""
    async def answer(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(RESPONSE)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def silent(reader, writer):
        try:
            await reader.read()  # until the checker gives up and hangs up
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def main():
        servers = []
        for i in range(count):
            servers.append(await asyncio.start_server(silent if i < hang else answer,
                                                      "127.0.0.1", 0, backlog=128))
        conn.send([s.sockets[0].getsockname()[1] for s in servers])
        await asyncio.Event().wait()

    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())


def start_targets(total: int, procs: int, hang: int):
    ctx = multiprocessing.get_context("fork")
    children, ports = [], []
    per, extra = divmod(total, procs)
    hang_per, hang_extra = divmod(hang, procs)
    for i in range(procs):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=serve_targets,
                        args=(per + (i < extra), hang_per + (i < hang_extra), child), daemon=True)
        p.start()
        children.append(p)
        ports.extend(parent.recv())
    return children, ports


# ---------------------------------------------------------------- scheduling loop

def scheduled_rounds(rounds: int, interval: float, one_round):
    """Run ``one_round()`` at t0, t0+interval, ...; returns [(lag, duration, checks)]."""
    out = []
    t0 = time.monotonic() + 0.2
    for i in range(rounds):
        due = t0 + i * interval
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        started = time.monotonic()
        checks = one_round()
        out.append((started - due, time.monotonic() - started, checks))
    # The achieved rate is measured over whole intervals (or longer, if rounds overran).
    return out, max(rounds * interval, time.monotonic() - t0)


def report(name: str, rows, wall: float, interval: float, targets: int, extra: str = "") -> dict:
    lags = [r[0] for r in rows]
    durations = [r[1] for r in rows]
    checks = sum(r[2] for r in rows)
    busy = sum(durations)
    on_schedule = checks / wall if wall else 0.0
    capacity = checks / busy if busy else 0.0
    print(f"\n== {name}{extra}")
    print(f"   targets {targets}, interval {interval:g}s, rounds {len(rows)}, checks {checks}")
    print(f"   check rate on schedule : {on_schedule:8.1f} checks/s "
          f"(needed {targets / interval:.0f}/s)")
    print(f"   capacity               : {capacity:8.1f} checks/s of busy time "
          f"(~{capacity * interval:.0f} targets per {interval:g}s interval)")
    print(f"   round duration         : min {min(durations):.3f}s  p50 "
          f"{statistics.median(durations):.3f}s  max {max(durations):.3f}s")
    print(f"   lag behind schedule    : min {min(lags) * 1000:.1f}ms  max {max(lags) * 1000:.1f}ms")
    kept = max(durations) <= interval and max(lags) < interval
    print(f"   keeps the schedule     : {'yes' if kept else 'NO'}")
    return {"mode": name, "checks": checks, "rate": on_schedule, "capacity": capacity,
            "round_max": max(durations), "lag_max": max(lags), "kept": kept}


# ---------------------------------------------------------------- modes

def in_slots(fn, items, slots: int) -> list:
    """Run fn over items like a worker with ``slots`` task slots (1: one after another)."""
    if slots <= 1:
        return [fn(i) for i in items]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(slots) as ex:
        return list(ex.map(fn, items))


def bench_checker(ports, args) -> dict:
    from controlplane.health.checker import CheckSpec, run_checks

    pools = [ports[i::args.pools] for i in range(args.pools)]
    specs = [[CheckSpec("127.0.0.1", p, path="/healthz", expected="200-399",
                        timeout=args.timeout) for p in pool] for pool in pools]
    failures = []

    def one_pool(pool_specs):
        results = asyncio.run(run_checks(pool_specs, args.concurrency))
        failures.append(sum(not r.ok for r in results))
        return len(results)

    def one_round():
        return sum(in_slots(one_pool, specs, args.slots))

    rows, wall = scheduled_rounds(args.rounds, args.interval, one_round)
    return report("checker (probes only)", rows, wall, args.interval, len(ports),
                  f", {args.pools} pools, {args.slots} slot(s), concurrency {args.concurrency}, "
                  f"failing per round {sum(failures) // max(1, args.rounds)}")


def bench_task(ports, args) -> dict:
    tmp = tempfile.mkdtemp(prefix="switchyard-hcbench-")
    os.environ["SWITCHYARD_VAR_DIR"] = tmp
    os.environ["SWITCHYARD_SQLITE_PATH"] = str(Path(tmp) / "bench.sqlite3")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    os.environ["LOG_LEVEL"] = "WARNING"
    import django
    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    settings.SWITCHYARD_HEALTH_CONCURRENCY = args.concurrency
    call_command("migrate", verbosity=0)
    from controlplane.health.models import TargetHealth
    from controlplane.health.rounds import run_pool_round
    from controlplane.proxy.models import Pool, Target

    pool_ids = []
    for i in range(args.pools):
        pool = Pool.objects.create(name=f"bench-{i}", health_check_enabled=True,
                                   health_check_interval=args.interval, health_check_timeout=args.timeout,
                                   health_check_path="/healthz")
        Target.objects.bulk_create([Target(pool=pool, host="127.0.0.1", port=p)
                                    for p in ports[i::args.pools]])
        pool_ids.append(pool.id)
    transitions = []

    def one_pool(pid):
        try:
            r = run_pool_round(pid, conc=args.concurrency)
        finally:
            if args.slots > 1:
                connections.close_all()  # this thread's connection
        transitions.append(len(r.transitions))
        return r.checked

    def one_round():
        return sum(in_slots(one_pool, pool_ids, args.slots))

    rows, wall = scheduled_rounds(args.rounds, args.interval, one_round)
    unhealthy = Target.objects.filter(healthy=False).count()
    checked = TargetHealth.objects.filter(last_checked__isnull=False).count()
    return report("task (full rounds with SQLite writes)", rows, wall, args.interval, len(ports),
                  f", {args.pools} pools, {args.slots} slot(s), concurrency {args.concurrency}; "
                  f"targets with results {checked}, unhealthy at end {unhealthy}, "
                  f"transitions {sum(transitions)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=4, help="target-serving processes")
    ap.add_argument("--pools", type=int, default=10, help="targets are spread over this many pools")
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=500)
    ap.add_argument("--hang", type=int, default=0,
                    help="this many targets accept but never answer (each check times out)")
    ap.add_argument("--slots", type=int, default=1,
                    help="worker task slots running pool rounds in parallel (Celery --concurrency)")
    ap.add_argument("--mode", choices=("checker", "task", "both"), default="both")
    args = ap.parse_args(argv)

    children, ports = start_targets(args.targets, args.procs, args.hang)
    print(f"{len(ports)} loopback targets on 127.0.0.1 in {args.procs} processes "
          f"({args.hang} never answer)")
    try:
        results = []
        if args.mode in ("checker", "both"):
            results.append(bench_checker(ports, args))
        if args.mode in ("task", "both"):
            results.append(bench_task(ports, args))
    finally:
        for c in children:
            c.terminate()
    return 0 if all(r["kept"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
