"""Debian's ``pebble`` ACME CA and ``pebble-challtestsrv`` (its DNS, and optionally its
HTTP-01 responder) on free loopback ports, for the tests.

Pebble resolves every name through challtestsrv's DNS, which answers 127.0.0.1 for all
of them, and validates HTTP-01 on ``http_port`` (the data-plane node's HTTP listener in
the end-to-end test, challtestsrv's own responder otherwise). Pebble's HTTPS certificate
comes from a trustme CA whose PEM (``ca_bundle``) is what the ACME client trusts; the
root that signs issued certificates is read from Pebble's management API (``root_pem``).
"""
from __future__ import annotations

import json
import shutil
import ssl
import urllib.request
from pathlib import Path

import pytest
import trustme

from tests.conftest import services_required
from tests.e2e.harness import Proc, base_env
from tests.support import free_port, wait_until


def require() -> None:
    """Skip the calling test when Pebble is not installed; with REQUIRE_SERVICES=1 (CI), fail."""
    missing = [name for name in ("pebble", "pebble-challtestsrv") if shutil.which(name) is None]
    if missing:
        problem = f"{', '.join(missing)} not installed (apt-get install pebble pebble-challtestsrv)"
        if services_required():
            pytest.fail(problem)
        pytest.skip(problem)


class Pebble:
    def __init__(self, root: Path, http_port: int | None = None, tls_port: int | None = None,
                 dns_server: str = "", eab_keys: dict[str, str] | None = None):
        self.root = root
        self.eab_keys = eab_keys or {}  # kid -> base64url HMAC key: External Account Binding required
        self.dns_server = dns_server  # "127.0.0.1:PORT": resolve through it instead of challtestsrv
        self.root.mkdir(parents=True, exist_ok=True)
        self.own_http01 = http_port is None  # challtestsrv answers HTTP-01 itself
        self.http_port = http_port or free_port()
        self.tls_port = tls_port or free_port()
        self.acme_port, self.mgmt_port = free_port(), free_port()
        self.dns_port, self.chall_mgmt_port = free_port(), free_port()
        self.ca = trustme.CA()
        self.ca_bundle = root / "pebble-https-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_bundle))
        self.pebble: Proc | None = None
        self.challtestsrv: Proc | None = None

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    def _config(self) -> Path:
        leaf = self.ca.issue_cert("127.0.0.1", "localhost")
        cert, key = self.root / "pebble-cert.pem", self.root / "pebble-key.pem"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{self.acme_port}",
            "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": str(cert), "privateKey": str(key),
            "httpPort": self.http_port, "tlsPort": self.tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": bool(self.eab_keys),
            "externalAccountMACKeys": self.eab_keys}}
        path = self.root / "pebble-config.json"
        path.write_text(json.dumps(config))
        return path

    def start(self) -> "Pebble":
        http01 = f"127.0.0.1:{self.http_port}" if self.own_http01 else ""
        self.challtestsrv = Proc("pebble-challtestsrv", [
            "pebble-challtestsrv", "-dns01", f"127.0.0.1:{self.dns_port}",
            "-management", f"127.0.0.1:{self.chall_mgmt_port}", "-http01", http01, "-https01", "",
            "-tlsalpn01", "", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
            base_env(), self.root / "challtestsrv.log").start()
        env = {**base_env(), "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
        self.pebble = Proc("pebble", ["pebble", "-config", str(self._config()),
                                      "-dnsserver", self.dns_server or f"127.0.0.1:{self.dns_port}"],
                           env, self.root / "pebble.log").start()
        wait_until(self._up, 30, "Pebble's directory and challtestsrv's management API",
                   interval=0.05, on_timeout=self.logs)
        return self

    def _up(self) -> bool:
        for proc in (self.pebble, self.challtestsrv):
            if not proc.alive:
                raise AssertionError(f"{proc.name} exited\n{proc.tail()}")
        try:
            self._get(self.directory)
            urllib.request.urlopen(f"http://127.0.0.1:{self.chall_mgmt_port}/", timeout=1)
        except urllib.error.HTTPError:
            return True  # challtestsrv answers 404 on "/": it is up
        except OSError:
            return False
        return True

    def _get(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(url, timeout=3, context=context) as resp:
            return resp.read()

    def root_pem(self) -> str:
        """The root that signs the certificates Pebble issues (new at every start)."""
        return self._get(f"https://127.0.0.1:{self.mgmt_port}/roots/0").decode()

    def add_http01(self, token: str, content: str) -> None:
        """Let challtestsrv answer an HTTP-01 token (only when it is the HTTP-01 responder)."""
        body = json.dumps({"token": token, "content": content}).encode()
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{self.chall_mgmt_port}/add-http01", data=body, method="POST"), timeout=3).read()

    def logs(self) -> str:
        return "\n".join(p.tail() for p in (self.pebble, self.challtestsrv) if p)

    def close(self) -> None:
        for proc in (self.pebble, self.challtestsrv):
            if proc:
                proc.stop(timeout=5)
