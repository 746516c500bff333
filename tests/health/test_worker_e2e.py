"""A real Celery worker and beat mark a killed upstream unhealthy within
unhealthy_threshold x interval + a margin, and bring it back.

embedded: filesystem broker, a SQLite file shared by the processes.
production: PostgreSQL, Redis broker and channels_redis; the HEALTH_CHANGED hint sent
by the worker must also reach a member of the data-plane group in another process.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = 1
UNHEALTHY_THRESHOLD = 2
MARGIN = 5.0  # beat's loop, the broker's 1 s polling, one check timeout

pytestmark = pytest.mark.e2e


def _env(tmp_path, database_url="", redis_url=""):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_TASK_ALWAYS_EAGER")}
    env.update(SWITCHYARD_VAR_DIR=str(tmp_path), SWITCHYARD_SQLITE_PATH=str(tmp_path / "db.sqlite3"),
               DJANGO_SETTINGS_MODULE="controlplane.settings", LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")
    if database_url:
        env.update(DATABASE_URL=database_url, REDIS_URL=redis_url)
    return env


class Database:
    def __init__(self, sqlite_path=None, url=None):
        self.sqlite_path, self.url = sqlite_path, url

    def query(self, sql, *params):
        if self.sqlite_path:
            with sqlite3.connect(self.sqlite_path, timeout=20) as conn:
                return conn.execute(sql, params).fetchone()
        import psycopg
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(sql.replace("?", "%s"), params).fetchone()
        return tuple(int(v) if isinstance(v, bool) else v for v in row) if row else row


@pytest.fixture(params=["embedded", pytest.param("production", marks=pytest.mark.postgres)])
def stack(request, tmp_path):
    if request.param == "embedded":
        yield _env(tmp_path), Database(sqlite_path=tmp_path / "db.sqlite3"), None
        return
    from tests.conftest import POSTGRES_URL, REDIS_URL
    from tests.e2e.harness import PostgresDatabase, RedisDatabase

    pg, rd = PostgresDatabase(POSTGRES_URL), RedisDatabase(REDIS_URL)
    try:
        yield _env(tmp_path, pg.url, rd.url), Database(url=pg.url), rd.url
    finally:
        pg.drop()
        rd.release()


class GroupListener:
    """A data-plane group member on the Redis channel layer, in this process."""

    def __init__(self, redis_url):
        from asgiref.sync import async_to_sync
        from channels_redis.core import RedisChannelLayer

        from controlplane.publishing.notify import DATAPLANE_GROUP

        self.sync = async_to_sync
        self.layer = RedisChannelLayer(hosts=[redis_url])
        self.channel = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(DATAPLANE_GROUP, self.channel)

    def receive(self, timeout):
        import asyncio

        async def go():
            return await asyncio.wait_for(self.layer.receive(self.channel), timeout)
        return self.sync(go)()


def _manage(env, *args, code=None):
    cmd = [sys.executable, "manage.py", *args] + (["-c", code] if code else [])
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)


def _start(env, tmp_path, name, *args):
    log = open(tmp_path / f"{name}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "controlplane", *args],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # our own process group (start_new_session)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _wait(predicate, timeout, what, logs):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}\n" + "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs))


def test_it_marks_a_killed_upstream_unhealthy_with_a_real_worker_and_beat(tmp_path, upstreams, stack):
    env, db, redis_url = stack
    _query = lambda _db, sql, *params: db.query(sql, *params)  # noqa: E731
    _manage(env, "migrate", "--noinput")
    upstream = upstreams.add(200)
    _manage(env, "shell", code=(
        "from controlplane.proxy.models import Pool, Target\n"
        f"p = Pool.objects.create(name='e2e', health_check_enabled=True, health_check_interval={INTERVAL},"
        f" health_check_timeout=0.5, healthy_threshold=1, unhealthy_threshold={UNHEALTHY_THRESHOLD})\n"
        f"Target.objects.create(pool=p, host='127.0.0.1', port={upstream.port})\n"))
    target_id, = _query(db, "SELECT id FROM proxy_target")
    assert _query(db, "SELECT count(*) FROM django_celery_beat_periodictask WHERE name LIKE ?",
                  "health-check-pool-%") == (1,)

    worker = _start(env, tmp_path, "worker", "worker", "-l", "info", "-c", "2",
                    "--without-gossip", "--without-mingle", "--without-heartbeat")
    beat = _start(env, tmp_path, "beat", "beat", "-l", "info", "--max-interval", "1",
                  "-s", str(tmp_path / "beat-schedule"))
    logs = [tmp_path / "worker.log", tmp_path / "beat.log"]
    try:
        _wait(lambda: (_query(db, "SELECT last_ok FROM health_targethealth WHERE target_id=?",
                              target_id) or (None,))[0] == 1, 60, "the first passing check", logs)
        listener = GroupListener(redis_url) if redis_url else None
        upstream.stop()
        killed = time.monotonic()
        _wait(lambda: _query(db, "SELECT healthy FROM proxy_target WHERE id=?", target_id) == (0,),
              UNHEALTHY_THRESHOLD * INTERVAL + MARGIN + 5, "the target to be marked unhealthy", logs)
        took = time.monotonic() - killed
        print(f"marked unhealthy {took:.2f}s after the upstream was killed")
        assert took <= UNHEALTHY_THRESHOLD * INTERVAL + MARGIN, took
        assert _query(db, "SELECT healthy, reason FROM health_healthtransition WHERE target_id=?",
                      target_id) == (0, "connection refused")
        assert _query(db, "SELECT generation FROM health_healthstate")[0] >= 1
        if listener is not None:  # the hint crossed from the worker process via Redis
            assert listener.receive(5) == {"type": "health.changed", "targets": {str(target_id): False}}

        upstream.start()
        _wait(lambda: _query(db, "SELECT healthy FROM proxy_target WHERE id=?", target_id) == (1,),
              INTERVAL + MARGIN + 5, "the target to come back", logs)
    finally:
        _stop(beat)
        _stop(worker)
