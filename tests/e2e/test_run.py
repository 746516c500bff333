"""`make run`'s stack: bootstrap, then the Procfile under honcho, on free ports; Ctrl-C stops it all."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.e2e.harness import REPO, ControlPlaneEnv, HarnessError, free_port, http_get, wait_until

pytestmark = pytest.mark.e2e

VENV_BIN = REPO / ".venv" / "bin"


@pytest.mark.skipif(not (VENV_BIN / "honcho").exists(), reason="the Procfile runs .venv/bin/*; no .venv here")
def test_procfile_stack_serves_the_demo_route_and_stops_on_ctrl_c(tmp_path, report_timing):
    cp = ControlPlaneEnv("embedded", tmp_path)
    ports = {name: free_port() for name in ("web", "http", "https", "admin", "demo")}
    env = {**cp.env,
           "SWITCHYARD_WEB_PORT": str(ports["web"]),
           "SWITCHYARD_NODE_HTTP": f"127.0.0.1:{ports['http']}",
           "SWITCHYARD_NODE_HTTPS": f"127.0.0.1:{ports['https']}",
           "SWITCHYARD_NODE_ADMIN": f"127.0.0.1:{ports['admin']}",
           "SWITCHYARD_DEMO_PORT": str(ports["demo"]),
           "SWITCHYARD_CELERY_CONCURRENCY": "1"}
    cp.env = env
    cp.manage("bootstrap")
    log_path = tmp_path / "honcho.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        honcho = subprocess.Popen([str(VENV_BIN / "honcho"), "-f", "Procfile", "start"], cwd=REPO, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    tail = lambda: log_path.read_text(errors="replace")[-4000:]  # noqa: E731
    try:
        def demo_served():
            if honcho.poll() is not None:
                raise HarnessError(f"honcho exited with {honcho.returncode}\n{tail()}")
            r = http_get(ports["http"], "/", host="demo.localhost", timeout=2)
            return r if r.status == 200 else None
        response, _ = wait_until(demo_served, 60, "demo.localhost through the node", interval=0.2,
                                 on_timeout=tail)
        report_timing("[embedded] Procfile start -> demo route served", time.monotonic() - started)
        assert "Hello from the Switchyard demo backend" in response.body
        assert "Host: demo.localhost" in response.body
        assert "X-Forwarded-For: 127.0.0.1" in response.body
        assert http_get(ports["web"], "/admin/login/", host="127.0.0.1").status == 200
        assert http_get(ports["admin"], "/readyz").status == 200
        ready, _ = wait_until(lambda: [ln for ln in tail().splitlines() if "Switchyard is ready:" in ln], 30,
                              "the ready line", on_timeout=tail)
        assert len(ready) == 1, ready
        assert f"dashboard http://127.0.0.1:{ports['web']}/ (sign in as admin" in ready[0]
        assert f"proxy http://127.0.0.1:{ports['http']}/ (try: curl -H 'Host: demo.localhost'" in ready[0]
    finally:
        # Ctrl-C: the terminal sends SIGINT to the whole foreground process group.
        os.killpg(honcho.pid, signal.SIGINT)
        try:
            honcho.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
            pytest.fail(f"honcho did not stop within 30 s of SIGINT\n{tail()}")
    stopped, _ = wait_until(lambda: not _group_alive(honcho.pid), 10, "every process of the stack to exit",
                            on_timeout=tail)
    assert stopped


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
