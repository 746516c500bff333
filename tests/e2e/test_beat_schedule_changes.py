"""A health check starts within two intervals of being saved, whenever that is — also
right as ``celery beat`` starts.

Real processes, in both modes: ``celery worker`` and ``celery beat`` started from the
Procfile's lines (``harness.CeleryProcs``) against the stack's database and broker, a
loopback upstream that answers the checks, and pools created through the service layer
in another process (``cpshell.py``, or a script that holds its transaction open). "Checked" is what the dashboard shows: the target's
``last_checked`` time recorded by the worker.
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.e2e.harness import PYTHON, REPO, CeleryProcs, wait_until

pytestmark = pytest.mark.e2e

INTERVAL = 2.0
BOUND = 2 * INTERVAL


@pytest.fixture
def celery(control_plane, tmp_path):
    procs = CeleryProcs(control_plane, tmp_path / "celery")
    yield procs
    procs.close()


@pytest.fixture
def upstream(make_stack):
    stack = make_stack()
    return stack.add_upstream("checked")


def _first_check_seconds(cp, celery, pool_id: int, since: float) -> float:
    """Seconds from ``since`` (monotonic) until the worker records the pool's first check."""
    checked = lambda: cp.call("target_health", pool_id=pool_id)[0]["last_checked"]  # noqa: E731
    wait_until(checked, 10 * BOUND, f"a first check of pool {pool_id}", interval=0.05, on_timeout=celery.logs)
    return time.monotonic() - since


def test_a_pool_created_as_beat_starts_is_checked_within_two_intervals(control_plane, celery, upstream,
                                                                       report_timing):
    celery.start_worker()
    celery.start_beat()  # returns as soon as beat logs "beat: Starting"
    site = control_plane.call("create_checked_site", name=f"beatstart-{upstream.name}",
                              host=f"beatstart-{upstream.name}.e2e.test", ports=[upstream.port],
                              interval=INTERVAL, timeout=0.5)
    saved = time.monotonic()

    took = _first_check_seconds(control_plane, celery, site["pool_id"], saved)
    report_timing("pool saved as beat starts -> first check", took)
    assert took <= BOUND, f"first check {took:.1f} s after the save (interval {INTERVAL} s)\n{celery.logs()}"


# Creates a checked pool through the service layer inside a transaction that stays open
# until a line arrives on stdin: a save that commits while beat is starting.
SAVE_AND_HOLD = r"""
import json, sys
import django
django.setup()
from django.db import transaction
from controlplane.proxy import services
name, port, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with transaction.atomic():
    pool = services.create_pool(
        services.Actor.system(), name=name, note="e2e: saved while beat starts",
        health_check_enabled=True, health_check_type="http", health_check_path="/",
        health_check_interval=interval, health_check_timeout=0.5,
        targets=[{"host": "127.0.0.1", "port": port, "weight": 1, "state": "enabled"}])
    print(json.dumps({"pool_id": pool.pk}), flush=True)
    sys.stdin.readline()
print("committed", flush=True)
"""


def _beat_waits_on_a_lock(cp) -> bool:
    """PostgreSQL: beat's start-up write of its own schedule waits for the open transaction.
    (SQLite offers no such view; there the commit follows beat's "Starting" line.)"""
    import psycopg

    with psycopg.connect(cp.env["DATABASE_URL"], autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND wait_event_type = 'Lock'").fetchone()
    return row[0] > 0


def test_a_pool_committed_while_beat_starts_is_checked_within_two_intervals(control_plane, celery, upstream,
                                                                          report_timing):
    """The save happens before beat reads its schedule and commits right after: the
    change marker beat takes as its baseline is then newer than a row it never saw."""
    celery.start_worker()
    saver = subprocess.Popen([PYTHON, "-c", SAVE_AND_HOLD, f"held-{upstream.name}", str(upstream.port),
                              str(INTERVAL)], cwd=REPO, env=control_plane.env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        pool_id = json.loads(saver.stdout.readline())["pool_id"]
        celery.start_beat()
        if control_plane.mode == "production":
            wait_until(lambda: _beat_waits_on_a_lock(control_plane), 30, "beat to wait for the open transaction",
                       on_timeout=celery.logs)
        saver.stdin.write("commit\n")
        saver.stdin.flush()
        assert saver.stdout.readline().strip() == "committed"
        committed = time.monotonic()
    finally:
        saver.stdin.close()
        saver.wait(30)

    took = _first_check_seconds(control_plane, celery, pool_id, committed)
    report_timing("pool committed while beat starts -> first check", took)
    assert took <= BOUND, f"first check {took:.1f} s after the commit (interval {INTERVAL} s)\n{celery.logs()}"
