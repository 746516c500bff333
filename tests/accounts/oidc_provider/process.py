"""Start and stop the test OpenID Connect provider (``serve.py``) as a subprocess."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[3]


class OIDCProvider:
    def __init__(self, workdir: Path, port: int, redirect_uri: str, users: list[dict],
                 client_id: str = "switchyard-test", client_secret: str = "switchyard-test-secret"):
        self.dir, self.port = workdir, port
        self.client_id, self.client_secret = client_id, client_secret
        self.issuer = f"http://127.0.0.1:{port}/o"
        workdir.mkdir(parents=True, exist_ok=True)
        self.spec = workdir / "spec.json"
        self.spec.write_text(json.dumps({"dir": str(workdir), "port": port, "client_id": client_id,
                                         "client_secret": client_secret, "redirect_uri": redirect_uri,
                                         "users": users}))
        self.log_path = workdir / "provider.log"
        self.proc = None

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def start(self) -> "OIDCProvider":
        import requests
        env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")}
        env["PYTHONPATH"] = str(ROOT)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.accounts.oidc_provider.serve", str(self.spec)],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"the OIDC provider exited:\n{self.log_tail()}")
            r = requests.get(self.issuer + "/.well-known/openid-configuration", timeout=5)
            return r.status_code == 200 and r.json()
        discovery, _ = wait_until(up, 90, "the OIDC provider's discovery document", interval=0.3,
                                  on_timeout=self.log_tail)
        assert discovery["issuer"] == self.issuer, discovery
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.log.close()
