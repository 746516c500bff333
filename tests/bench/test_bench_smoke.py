"""Smoke test of the benchmark harness: ``python -m bench --quick`` end to end.

It proves the harness starts every server, runs every load and section, writes its JSON
and leaves no process behind. The figures themselves are never asserted.
Skipped with a visible reason when nginx, HAProxy or wrk is missing, unless
``REQUIRE_SERVICES=1``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import services_required

REPO = Path(__file__).resolve().parents[2]
TOOLS = {"nginx": "/usr/sbin/nginx", "haproxy": "/usr/sbin/haproxy", "wrk": "/usr/bin/wrk"}


def _missing() -> list[str]:
    return [name for name, path in TOOLS.items() if not os.access(path, os.X_OK)]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(f"{pid}: {cmd}")
    return found


@pytest.mark.timeout(150)
def test_quick_bench_runs_end_to_end(tmp_path):
    missing = _missing()
    if missing:
        reason = f"bench needs {', '.join(missing)} (apt-get install {' '.join(missing)})"
        if services_required():
            pytest.fail(reason + " and REQUIRE_SERVICES=1")
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE") and not k.startswith("SWITCHYARD_")}
    proc = subprocess.Popen([sys.executable, "-m", "bench", "--quick", "--results", str(tmp_path)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the harness stops every server it started
        out, err = proc.communicate(timeout=8)
        pytest.fail("python -m bench --quick took more than 120 s:\n" + (err + out)[-4000:])
    output = err + out
    assert proc.returncode == 0, output[-6000:]
    report = json.loads((tmp_path / "latest-quick.json").read_text())
    assert not report.get("errors"), report.get("errors")
    for key in ("small_keepalive", "small_new_conn", "big_1mib", "fixed_rate", "single_conn",
                "single_conn_colocated"):
        results = report["compare"][key]["results"]
        assert {"direct", "nginx", "haproxy", "switchyard-1w"} <= set(results), key
        assert all(r["rps"] > 0 for r in results.values()), (key, results)
    for key in ("routes", "snapshot", "change_to_ack", "idle_connections", "health_checks"):
        assert key in report, key
    assert report["change_to_ack"]["embedded"]["acked"] == report["change_to_ack"]["embedded"]["changes"]
    for name in ("x nginx", "switchyard-1w", "change through the service layer", "health-check throughput"):
        assert name in output
    assert not _processes_mentioning(report["tmp"]), "the harness left processes behind"
    assert not Path(report["tmp"]).exists()
