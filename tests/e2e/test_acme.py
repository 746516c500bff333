"""Automatic certificates end to end, with real processes on loopback: Daphne, a Celery
worker, a data-plane node, an upstream, and Debian's Pebble ACME CA validating HTTP-01
against the node's HTTP listener, TLS-ALPN-01 against its HTTPS listener, and DNS-01
through a loopback DNS server that takes TSIG-signed RFC 2136 updates
(tests/acme/dnsserver.py), which is also Pebble's resolver: every name is 127.0.0.1,
except where a test points one elsewhere.

A route that asks for a certificate ends with the node presenting the issued chain to a
real TLS client that trusts only Pebble's root (read from Pebble's management API). The
time from the ask to that handshake is reported per method (median of 5). A route whose
challenge the CA cannot reach ends failed, with the CA's error, a retry time on the
route page, and exactly one e-mail and one webhook. A forced renewal replaces the
certificate on the node while an open TLS connection keeps working."""
from __future__ import annotations

import http.client
import socket
import ssl
import statistics
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from tests.acme.dnsserver import DnsServer
from tests.acme.pebble import Pebble, require
from tests.alerts.servers import WEBHOOK_SECRET, _serve, _Sink
from tests.conftest import POSTGRES_URL, REDIS_URL, require_services
from tests.e2e.harness import (CeleryProcs, ControlPlaneEnv, CPShell, PostgresDatabase, RedisDatabase, Stack,
                               free_port, wait_until)

pytestmark = pytest.mark.e2e
ACMESHELL = Path(__file__).resolve().parents[1] / "acme" / "acmeshell.py"
ASKS = 5
ISSUE_DEADLINE = 60.0
ZONE = "dyn.example.test"


class AcmeStack:
    """One control plane with ACME pointed at Pebble, a node Pebble validates against, a worker."""

    def __init__(self, mode: str, root: Path, env: dict | None = None):
        self.cleanups = []
        self.dns = DnsServer(ZONE).start()
        self.cleanups.append(self.dns.close)
        self.smtp = _Sink()
        self.smtp_controller = Controller(self.smtp, hostname="127.0.0.1", port=free_port())
        self.smtp_controller.start()
        self.cleanups.append(self.smtp_controller.stop)
        self.webhook, httpd = _serve()
        self.cleanups += [httpd.server_close, httpd.shutdown]
        self.pebble = Pebble(root / "pebble", http_port=free_port(), tls_port=free_port(),
                             dns_server=f"127.0.0.1:{self.dns.port}")
        self.cp = ControlPlaneEnv(mode, root / "cp", *self._databases(mode))
        self.cp.env.update({
            "SWITCHYARD_ACME_DIRECTORY": self.pebble.directory,
            "SWITCHYARD_ACME_CA_BUNDLE": str(self.pebble.ca_bundle),
            "SWITCHYARD_ACME_EMAIL": "ops@example.test",
            "SWITCHYARD_ACME_RETRY_BASE_SECONDS": "3600",
            "SWITCHYARD_ACME_PROPAGATION_SECONDS": "20",
            "SWITCHYARD_ACME_DNS_SERVER": f"127.0.0.1:{self.dns.port}",
            "SWITCHYARD_ACME_DNS_ZONE": ZONE,
            "SWITCHYARD_ACME_DNS_TSIG_NAME": self.dns.key_name,
            "SWITCHYARD_ACME_DNS_TSIG_SECRET": self.dns.secret,
            "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(self.smtp_controller.port),
        })
        self.cp.env.update(env or {})  # e.g. SWITCHYARD_ACME_ON_DEMAND_ASK (tests/e2e/test_acme_on_demand.py)
        self.cp.manage("migrate", "--noinput", "-v", "0")
        self.cp.shell = self.shell = CPShell(self.cp.env, root / "acmeshell.log", script=ACMESHELL)
        self.cleanups.append(self.cp.close)
        self.pebble.start()
        self.cleanups.append(self.pebble.close)
        self.stack = Stack(self.cp, root / "stack")
        self.cleanups.append(self.stack.close)
        self.stack.start_control_plane()
        self.node = self.stack.add_node(start=False)
        self.node.http_port, self.node.https_port = self.pebble.http_port, self.pebble.tls_port
        self.node.start()
        self.shell.call("create_channel", name="acme mail", kind="email", emails=["oncall@example.test"])
        self.shell.call("create_channel", name="acme hook", kind="webhook", url=self.webhook.url("/platform"),
                        secret=WEBHOOK_SECRET)
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

    def presented_chain(self, host: str, root_pem: str) -> dict | None:
        """The node's certificate for ``host`` when a client trusting only ``root_pem`` accepts it."""
        context = ssl.create_default_context(cadata=root_pem)
        try:
            with socket.create_connection(("127.0.0.1", self.node.https_port), timeout=3) as sock:
                with context.wrap_socket(sock, server_hostname=host) as tls:
                    return tls.getpeercert()
        except ssl.SSLCertVerificationError:
            return None  # still the node's default certificate

    def issued_site(self, name: str) -> tuple[str, str, int, dict]:
        """A route asking for a certificate, once the node presents it: (Pebble's root PEM,
        host, route id, the presented certificate)."""
        root_pem = self.pebble.root_pem()
        host = f"{name}-{self.stack.tag}.example.com"
        route_id = self.shell.call("create_acme_site", name=f"{name}-{self.stack.tag}", host=host,
                                   port=self.upstream.port)
        cert = wait_until(lambda: self.presented_chain(host, root_pem), ISSUE_DEADLINE,
                          f"the certificate for {host}", interval=0.05, on_timeout=self.logs)[0]
        return root_pem, host, route_id, cert

    def emails(self, needle: str) -> list[dict]:
        with self.smtp.lock:
            return [m for m in self.smtp.messages if needle in m["subject"]]

    def hooks(self, needle: str) -> list:
        return [r for r in list(self.webhook.requests) if needle in r.json.get("subject", "")]

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


class OpenTls:
    """One kept-alive HTTPS connection to the node, trusting only Pebble's root."""

    def __init__(self, port: int, host: str, root_pem: str):
        context = ssl.create_default_context(cadata=root_pem)
        self.host = host
        self.tls = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                       server_hostname=host)

    def get(self) -> int:
        self.tls.sendall(f"GET / HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        response = http.client.HTTPResponse(self.tls)
        response.begin()
        response.read()
        return response.status

    def serial(self) -> str:
        return self.tls.getpeercert()["serialNumber"]

    def close(self) -> None:
        self.tls.close()


def _names(method: str, i: int, tag: str) -> tuple[str, str]:
    """(the route's host, a name a client asks the node for)."""
    if method == "dns-01":  # a wildcard: only DNS-01 can validate it
        return f"*.w{i}-{tag}.{ZONE}", f"app.w{i}-{tag}.{ZONE}"
    host = f"{method[:3]}{i}-{tag}.example.com"
    return host, host


@pytest.mark.parametrize("method", ["http-01", "tls-alpn-01", "dns-01"])
def test_asked_route_ends_with_the_node_presenting_the_issued_chain(acme_stack, report_timing, method):
    s = acme_stack
    root_pem = s.pebble.root_pem()
    took = []
    for i in range(ASKS):
        host, sni = _names(method, i, s.stack.tag)
        started = time.monotonic()
        route_id = s.shell.call("create_acme_site", name=f"{method}-{i}-{s.stack.tag}", host=host,
                                port=s.upstream.port, challenge=method if method != "dns-01" else "")
        cert = wait_until(lambda sni=sni: s.presented_chain(sni, root_pem), ISSUE_DEADLINE,
                          f"node to present a Pebble-issued certificate for {sni}", interval=0.05,
                          on_timeout=s.logs)[0]
        took.append(time.monotonic() - started)
        assert ("DNS", host) in cert["subjectAltName"]
        status = s.shell.call("acme_status", route_id=route_id)
        assert status["state"] == "valid" and status["certificate"] and status["error"] is None
        assert status["challenge"] == method
    report_timing(f"ACME {method} ask -> node presents the issued certificate (median of 5)",
                  statistics.median(took))
    report_timing(f"ACME {method} ask -> node presents the issued certificate (max of 5)", max(took))
    assert s.node.get(sni).status == 200  # the route itself serves through the node
    if method == "dns-01":
        assert s.dns.txt(f"_acme-challenge.w0-{s.stack.tag}.{ZONE}.") == set()  # cleaned up


def test_forced_renewal_replaces_the_certificate_without_dropping_an_open_connection(acme_stack):
    s = acme_stack
    root_pem, host, route_id, first = s.issued_site("renew")
    conn = OpenTls(s.node.https_port, host, root_pem)
    assert conn.get() == 200 and conn.serial() == first["serialNumber"]

    s.shell.call("force_renewal", route_id=route_id)
    renewed = wait_until(lambda: (c := s.presented_chain(host, root_pem)) and
                         c["serialNumber"] != first["serialNumber"] and c, ISSUE_DEADLINE,
                         f"the renewed certificate for {host}", interval=0.05, on_timeout=s.logs)[0]
    assert ("DNS", host) in renewed["subjectAltName"]
    for _ in range(3):  # the connection opened before the renewal still works, on its certificate
        assert conn.get() == 200
    assert conn.serial() == first["serialNumber"]
    conn.close()
    assert s.shell.call("acme_status", route_id=route_id)["state"] == "valid"


def test_switching_acme_off_keeps_the_certificate_and_says_so(acme_stack):
    s = acme_stack
    root_pem, host, route_id, first = s.issued_site("off")
    s.shell.call("set_acme", route_id=route_id, acme=False)
    status = s.shell.call("acme_status", route_id=route_id)
    assert status["state"] == "off" and status["certificate"] and status["renew_at"] is None
    page = s.shell.call("route_page", route_id=route_id)
    assert page["status"] == 200 and "renewal off" in page["html"] and "is not renewed" in page["html"]
    assert s.presented_chain(host, root_pem)["serialNumber"] == first["serialNumber"]


def test_unreachable_challenge_fails_with_the_ca_s_error_one_mail_one_webhook(acme_stack):
    s = acme_stack
    host = f"down-{s.stack.tag}.example.com"
    s.dns.add_record(host, "A", "127.0.0.2")  # nothing listens there
    route_id = s.shell.call("create_acme_site", name=f"down-{s.stack.tag}", host=host, port=s.upstream.port)
    status = wait_until(lambda: (st := s.shell.call("acme_status", route_id=route_id))["state"] == "failed" and st,
                        ISSUE_DEADLINE, f"the order for {host} to fail", interval=0.1, on_timeout=s.logs)[0]
    assert host in status["error"] and status["next_retry"] and status["certificate"] is None
    alerts = s.shell.call("alerts", kind="acme_failed", dedup_prefix=f"acme:route:{route_id}")
    assert len(alerts) == 1 and host in alerts[0]["subject"]
    wait_until(lambda: s.emails(host) and s.hooks(host), ISSUE_DEADLINE, "the acme_failed e-mail and webhook",
               interval=0.1, on_timeout=s.logs)
    # a second failure (the retry) is debounced: still one of each
    s.shell.call("force_renewal", route_id=route_id)
    wait_until(lambda: s.shell.call("acme_status", route_id=route_id)["next_retry"] != status["next_retry"],
               ISSUE_DEADLINE, "the retry to fail too", interval=0.1, on_timeout=s.logs)
    mails, hooks = s.emails(host), s.hooks(host)
    assert len(mails) == 1 and mails[0]["to"] == ["oncall@example.test"] and host in mails[0]["body"]
    assert len(hooks) == 1 and hooks[0].signature_valid and hooks[0].json["kind"] == "acme_failed"
    page = s.shell.call("route_page", route_id=route_id)
    assert page["status"] == 200 and "failed" in page["html"] and "next try" in page["html"]
    assert host in page["html"]
