"""Disaster recovery, end to end, with real processes and the README's commands.

A production control plane (Daphne on a PostgreSQL database of its own, its own Redis)
and a real node serving a real upstream. Then, exactly as README "Backup and disaster
recovery" says: ``manage.py config backup``; the control plane stops; the database is
dropped and created empty; ``manage.py migrate``; ``manage.py config restore``; Daphne
starts again. The node is never restarted: it keeps serving its last-known-good
configuration, reconnects with its token and ends with the same configuration hash.
Requests sent through the node during the whole procedure: none fails. The time the
control plane was away is printed (``report_timing``), not asserted.
"""
from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest

from tests.conftest import POSTGRES_URL
from tests.e2e.harness import CPShell, http_get, stack_on_own_redis, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


class Traffic:
    """Requests through the node, one after another on new connections, until stopped."""

    def __init__(self, port: int, host: str, upstream: str):
        self.port, self.host, self.expected = port, host, f"upstream={upstream}\n"
        self.ok, self.failed = 0, []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name="dr-traffic", daemon=True)

    def run(self):
        while not self.stopped.is_set():
            try:
                r = http_get(self.port, "/", host=self.host, timeout=5)
                if r.status == 200 and self.expected in r.body:
                    self.ok += 1
                else:
                    self.failed.append(f"{r.status} {r.body[:120]!r}")
            except OSError as exc:
                self.failed.append(repr(exc))
            self.stopped.wait(0.02)   # pacing: about 50 requests a second at most

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join(15)


def recreate_database(name: str) -> None:
    """Drop the control plane's database and create it again, empty."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def test_backup_drop_the_database_restore_and_the_node_keeps_serving_with_the_same_hash(tmp_path, report_timing):
    with stack_on_own_redis(tmp_path, POSTGRES_URL) as (stack, db, _redis):
        cp = stack.cp
        upstream = stack.add_upstream("dr")
        site = stack.create_site("dr", upstream)
        cp.call("create_channel", name="oncall", kind="webhook", url="https://hooks.example.com/x", secret="s3cret")
        node = stack.add_node()
        node.wait_served(site["host"], upstream.name, timeout=30)
        before = stack.wait_node_in_sync(node)[0]
        node_pid = node.proc.popen.pid
        assert node.readyz()["hash"] == before["latest"]["hash"]
        backup = tmp_path / "switchyard-backup.json"

        with Traffic(node.http_port, site["host"], upstream.name) as traffic:
            wait_until(lambda: traffic.ok >= 5, 30, "the first requests through the node")
            # 1. back up (the control plane still running)
            out = cp.manage("config", "backup", str(backup)).stdout
            assert "Backed up" in out and backup.stat().st_mode & 0o777 == 0o600
            # 2. the control plane goes away, and so does its database
            away = time.monotonic()
            stack.daphne.stop()
            cp.shell.close()
            recreate_database(db.name)
            steps = {"stop Daphne, drop and create the database": time.monotonic() - away}
            # 3. rebuild: migrate, restore, start
            started = time.monotonic()
            cp.manage("migrate", "--noinput", "-v", "0")
            steps["manage.py migrate"] = time.monotonic() - started
            started = time.monotonic()
            restored = cp.manage("config", "restore", str(backup)).stdout
            steps["manage.py config restore"] = time.monotonic() - started
            assert f"sha256 {before['latest']['hash']}: the stored configuration compiles to it" in restored
            steps["start Daphne until it answers"] = stack.start_control_plane()
            control_plane_away = time.monotonic() - away
            cp.shell = CPShell(cp.env, tmp_path / "cpshell-after-restore.log")
            # 4. the node, never restarted, reconnects with its token and has the same hash
            # (restore leaves every node disconnected: connected again means it came back)
            def reconnected():
                rec = stack.node_record(node)
                return rec if rec["connected"] and rec["applied_hash"] == before["latest"]["hash"] else None
            rec, reconnect = wait_until(reconnected, 120, "the node to reconnect with the same hash", interval=0.1,
                                        on_timeout=stack.logs)
            assert node.proc.alive and node.proc.popen.pid == node_pid
            assert cp.call("latest") == before["latest"]
            assert rec["applied_version"] == before["latest"]["version"]
            assert node.readyz()["hash"] == before["latest"]["hash"]
            served_after = traffic.ok
            wait_until(lambda: traffic.ok >= served_after + 5, 30, "requests after the recovery")

        assert traffic.failed == [], traffic.failed[:10]
        report_timing("disaster recovery: control plane away (stop → backup restored → Daphne answers)",
                      control_plane_away)
        for step, seconds in steps.items():
            report_timing(f"disaster recovery step: {step}", seconds)
        report_timing("disaster recovery: node back in sync after Daphne answered", reconnect)
        print(f"disaster recovery: {traffic.ok} requests through the node during the procedure, 0 failed")
        restored_channel = json.loads(cp.manage("shell", "-c", (
            "import json\nfrom controlplane.alerts.models import AlertChannel\n"
            "print(json.dumps(AlertChannel.objects.get(name='oncall').secret))")).stdout.strip().splitlines()[-1])
        assert restored_channel == "s3cret"
