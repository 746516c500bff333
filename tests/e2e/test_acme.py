"""Automatic certificates end to end, with real processes on loopback: Daphne, a Celery
worker, a data-plane node, an upstream, and Debian's Pebble ACME CA validating HTTP-01
against the node's HTTP listener (pebble-challtestsrv is its DNS: every name is
127.0.0.1, except where a test points one elsewhere).

A route that asks for a certificate ends with the node presenting the issued chain to a
real TLS client that trusts only Pebble's root (read from Pebble's management API). The
time from the ask to that handshake is reported (median of 5). A route whose challenge
the CA cannot reach ends failed, with the CA's error, a retry time and one alert."""
from __future__ import annotations

import json
import socket
import ssl
import statistics
import time
import urllib.request
from pathlib import Path

import pytest

from tests.acme.pebble import Pebble, require
from tests.conftest import POSTGRES_URL, REDIS_URL, require_services
from tests.e2e.harness import (CeleryProcs, ControlPlaneEnv, CPShell, PostgresDatabase, RedisDatabase, Stack,
                               free_port, wait_until)

pytestmark = pytest.mark.e2e
ACMESHELL = Path(__file__).resolve().parents[1] / "acme" / "acmeshell.py"
ASKS = 5
ISSUE_DEADLINE = 60.0


class AcmeStack:
    """One control plane with ACME pointed at Pebble, a node Pebble validates against, a worker."""

    def __init__(self, mode: str, root: Path):
        self.cleanups = []
        self.pebble = Pebble(root / "pebble", http_port=free_port())
        self.cp = ControlPlaneEnv(mode, root / "cp", *self._databases(mode))
        self.cp.env.update({
            "SWITCHYARD_ACME_DIRECTORY": self.pebble.directory,
            "SWITCHYARD_ACME_CA_BUNDLE": str(self.pebble.ca_bundle),
            "SWITCHYARD_ACME_EMAIL": "ops@example.test",
            "SWITCHYARD_ACME_RETRY_BASE_SECONDS": "3600",
            "SWITCHYARD_ACME_PROPAGATION_SECONDS": "20",
        })
        self.cp.manage("migrate", "--noinput", "-v", "0")
        self.cp.shell = self.shell = CPShell(self.cp.env, root / "acmeshell.log", script=ACMESHELL)
        self.cleanups.append(self.cp.close)
        self.pebble.start()
        self.cleanups.append(self.pebble.close)
        self.stack = Stack(self.cp, root / "stack")
        self.cleanups.append(self.stack.close)
        self.stack.start_control_plane()
        self.node = self.stack.add_node(start=False)
        self.node.http_port = self.pebble.http_port
        self.node.start()
        self.celery = CeleryProcs(self.cp, root / "celery")
        self.cleanups.append(self.celery.close)
        self.celery.start_worker()
        self.upstream = self.stack.add_upstream("app")

    def _databases(self, mode: str) -> tuple[str, str]:
        if mode != "production":
            return "", ""
        require_services("postgres", "redis")
        pg, rd = PostgresDatabase(POSTGRES_URL), RedisDatabase(REDIS_URL)
        self.cleanups += [pg.drop, rd.release]
        return pg.url, rd.url

    def presented_chain(self, host: str, root_pem: str) -> list | None:
        """The node's certificate for ``host`` when a client trusting only ``root_pem`` accepts it."""
        context = ssl.create_default_context(cadata=root_pem)
        with socket.create_connection(("127.0.0.1", self.node.https_port), timeout=3) as sock:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                return tls.getpeercert()

    def logs(self) -> str:
        return "\n".join([self.stack.logs(), self.celery.logs(), self.pebble.logs()])

    def close(self):
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - cleanup must go on
                print(f"acme e2e cleanup: {fn} failed: {exc}")


@pytest.fixture(scope="module", params=["embedded", pytest.param("production", marks=pytest.mark.postgres)])
def acme_stack(request, tmp_path_factory):
    require()
    stack = AcmeStack(request.param, tmp_path_factory.mktemp(f"acme-{request.param}"))
    try:
        yield stack
    finally:
        stack.close()


def test_asked_route_ends_with_the_node_presenting_the_issued_chain(acme_stack, report_timing):
    s = acme_stack
    root_pem = s.pebble.root_pem()
    took = []
    for i in range(ASKS):
        host = f"site{i}-{s.stack.tag}.example.com"
        started = time.monotonic()
        route_id = s.shell.call("create_acme_site", name=f"site{i}-{s.stack.tag}", host=host,
                                port=s.upstream.port)
        cert = wait_until(lambda host=host: s.presented_chain(host, root_pem), ISSUE_DEADLINE,
                          f"node to present a Pebble-issued certificate for {host}", interval=0.05,
                          on_timeout=s.logs)[0]
        took.append(time.monotonic() - started)
        assert ("DNS", host) in cert["subjectAltName"]
        status = s.shell.call("acme_status", route_id=route_id)
        assert status["state"] == "valid" and status["certificate"] and status["error"] is None
    report_timing("ACME ask -> node presents the issued certificate (median of 5)", statistics.median(took))
    report_timing("ACME ask -> node presents the issued certificate (max of 5)", max(took))
    assert s.node.get(host).status == 200  # the route itself serves through the node


def test_unreachable_challenge_fails_with_the_ca_s_error_and_one_alert(acme_stack):
    s = acme_stack
    host = f"down-{s.stack.tag}.example.com"
    body = json.dumps({"host": host, "addresses": ["127.0.0.2"]}).encode()  # nothing listens there
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{s.pebble.chall_mgmt_port}/add-a",
                                                  data=body, method="POST"), timeout=3).read()
    route_id = s.shell.call("create_acme_site", name=f"down-{s.stack.tag}", host=host, port=s.upstream.port)
    status = wait_until(lambda: (st := s.shell.call("acme_status", route_id=route_id))["state"] == "failed" and st,
                        ISSUE_DEADLINE, f"the order for {host} to fail", interval=0.1, on_timeout=s.logs)[0]
    assert host in status["error"] and status["next_retry"] and status["certificate"] is None
    alerts = s.shell.call("alerts", kind="acme_failed", dedup_prefix=f"acme:route:{route_id}")
    assert len(alerts) == 1 and host in alerts[0]["subject"]
