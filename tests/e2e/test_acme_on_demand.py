"""On-demand TLS end to end, with real processes on loopback (the stack of
tests/e2e/test_acme.py: Daphne, a Celery worker, a data-plane node, an upstream, Debian's
Pebble validating HTTP-01 against the node) and a real "ask" HTTP server.

A TLS handshake whose SNI names a new host below a tenant's on-demand delegation (served
by the tenant's ``*.`` route) ends with the node presenting a Pebble-issued certificate
for exactly that name to a client that trusts only Pebble's root; the time from the
first handshake to that is reported (median of 5). Names below a delegation without
on-demand issuance, outside every delegation, refused by the ask endpoint or beyond the
delegation's quota get no order; the refused ones are listed with their reason. A route
choosing TLS-ALPN-01 gets its on-demand names validated on the node's TLS listener, and a
node with ``--workers 2`` reports its workers' names through the supervisor."""
from __future__ import annotations

import http.server
import socket
import ssl
import statistics
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.acme.pebble import require
from tests.e2e.harness import CPShell, Node, wait_until
from tests.e2e.test_acme import ISSUE_DEADLINE, AcmeStack

pytestmark = pytest.mark.e2e
SHELL = Path(__file__).resolve().parents[1] / "acme" / "ondemandshell.py"
TIMES = 5


class AskServer:
    """The platform's ask endpoint: 200 for every domain except those starting "deny-"."""

    def __init__(self):
        self.asked: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                domain = parse_qs(urlsplit(self.path).query).get("domain", [""])[0]
                outer.asked.append(domain)
                self.send_response(403 if domain.startswith("deny-") else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/ask"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module", params=["embedded", pytest.param("production", marks=pytest.mark.postgres)])
def on_demand_stack(request, tmp_path_factory):
    require()
    ask = AskServer()
    root = tmp_path_factory.mktemp(f"ondemand-{request.param}")
    stack = AcmeStack(request.param, root, env={"SWITCHYARD_ACME_ON_DEMAND_ASK": ask.url,
                                                "SWITCHYARD_ACME_ON_DEMAND_ASK_TIMEOUT": "5"})
    stack.ask = ask
    stack.od = CPShell(stack.cp.env, root / "ondemandshell.log", script=SHELL)
    try:
        yield stack
    finally:
        stack.od.close()
        stack.close()
        ask.close()


def handshake(port: int, name: str, root_pem: str) -> dict | None:
    """The certificate the node presents for ``name`` if a client trusting only Pebble's
    root accepts it for that name; None while it presents something else (or nothing)."""
    context = ssl.create_default_context(cadata=root_pem)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            with context.wrap_socket(sock, server_hostname=name) as tls:
                return tls.getpeercert()
    except (ssl.SSLError, OSError):
        return None


def test_a_handshake_for_a_new_name_ends_with_the_node_presenting_its_issued_certificate(on_demand_stack,
                                                                                        report_timing):
    s = on_demand_stack
    suffix = f"apps.t1-{s.stack.tag}.example"
    delegation = s.od.call("on_demand_tenant", slug=f"t1-{s.stack.tag}", suffix=suffix, port=s.upstream.port)
    root_pem = s.pebble.root_pem()
    took = []
    for i in range(TIMES):
        name = f"new{i}.{suffix}"
        started = time.monotonic()
        assert handshake(s.node.https_port, name, root_pem) is None  # the first handshake does not wait
        cert = wait_until(lambda name=name: handshake(s.node.https_port, name, root_pem), ISSUE_DEADLINE,
                          f"the node to present a Pebble-issued certificate for {name}", interval=0.1,
                          on_timeout=s.logs)[0]
        took.append(time.monotonic() - started)
        assert cert["subjectAltName"] == (("DNS", name),)
    report_timing("on-demand TLS: first handshake -> node presents the issued certificate (median of 5)",
                  statistics.median(took))
    report_timing("on-demand TLS: first handshake -> node presents the issued certificate (max of 5)", max(took))
    assert s.node.get(f"new0.{suffix}").status == 200  # the wildcard route serves the name
    orders = s.od.call("on_demand_orders")
    assert {orders[f"new{i}.{suffix}"] for i in range(TIMES)} == {"valid"}
    state = s.od.call("on_demand_state", delegation_id=delegation)
    assert (state["used"], state["issued"], state["refusals"]) == (TIMES, TIMES, [])
    assert sorted(set(s.ask.asked) & {f"new{i}.{suffix}" for i in range(TIMES)}) == sorted(
        f"new{i}.{suffix}" for i in range(TIMES))


def test_names_without_on_demand_refused_by_ask_or_beyond_the_quota_get_no_order(on_demand_stack):
    s = on_demand_stack
    tag = s.stack.tag
    off = f"apps.t2-{tag}.example"
    s.od.call("on_demand_tenant", slug=f"t2-{tag}", suffix=off, port=s.upstream.port, on_demand=False)
    quota = f"apps.t3-{tag}.example"
    delegation = s.od.call("on_demand_tenant", slug=f"t3-{tag}", suffix=quota, port=s.upstream.port,
                           max_certificates=1)
    asked = f"apps.t4-{tag}.example"  # room in its quota: the ask endpoint decides
    asked_delegation = s.od.call("on_demand_tenant", slug=f"t4-{tag}", suffix=asked, port=s.upstream.port)
    root_pem = s.pebble.root_pem()
    first = f"first.{quota}"
    # the quota's one certificate first
    wait_until(lambda: handshake(s.node.https_port, first, root_pem), ISSUE_DEADLINE,
               f"the certificate for {first}", interval=0.1, on_timeout=s.logs)
    refused = {f"deny-x.{asked}": "the ask endpoint answered 403",
               f"second.{quota}": "quota: 1 of 1 on-demand certificates"}
    ignored = [f"x.{off}", f"y.nowhere-{tag}.example"]
    for name in ignored + list(refused):
        assert handshake(s.node.https_port, name, root_pem) is None

    def refusals():
        got = {r["name"]: r["reason"] for d in (delegation, asked_delegation)
               for r in s.od.call("on_demand_state", delegation_id=d)["refusals"]}
        return set(got) == set(refused) and got

    got = wait_until(refusals, ISSUE_DEADLINE, "both refusals", interval=0.2, on_timeout=s.logs)[0]
    for name, reason in refused.items():
        assert got[name].startswith(reason)
    orders = s.od.call("on_demand_orders")
    assert not set(orders) & (set(ignored) | set(refused))
    assert orders[first] == "valid"
    assert not set(s.ask.asked) & set(ignored)  # dropped before any ask
    for name in ignored + list(refused):  # still no certificate for them
        assert handshake(s.node.https_port, name, root_pem) is None


def test_the_serving_route_s_tls_alpn01_choice_validates_on_the_node_s_tls_listener(on_demand_stack):
    s = on_demand_stack
    suffix = f"alpn.t6-{s.stack.tag}.example"
    s.od.call("on_demand_tenant", slug=f"t6-{s.stack.tag}", suffix=suffix, port=s.upstream.port,
              challenge="tls-alpn-01")
    root_pem = s.pebble.root_pem()
    host = f"new.{suffix}"
    cert = wait_until(lambda: handshake(s.node.https_port, host, root_pem), ISSUE_DEADLINE,
                      f"the node to present a Pebble-issued certificate for {host}", interval=0.1,
                      on_timeout=s.logs)[0]
    assert cert["subjectAltName"] == (("DNS", host),)
    assert s.od.call("on_demand_orders")[host] == "valid"
    assert s.od.call("on_demand_challenge", host=host) == "tls-alpn-01"


class WorkersNode(Node):
    """``--workers 2``: the handshakes reach a worker; the supervisor reports the names."""

    def argv(self) -> list[str]:
        return [*super().argv(), "--workers", "2"]


def test_a_node_with_workers_reports_through_its_supervisor(on_demand_stack):
    s = on_demand_stack
    tag = s.stack.tag
    name = f"wk-{tag}"
    node = WorkersNode(s.stack, name, s.stack.cp.call("register_node", name=name)["token"])
    s.stack.nodes.append(node)  # stopped with the stack
    node.start()
    suffix = f"apps.t5-{tag}.example"
    s.od.call("on_demand_tenant", slug=f"t5-{tag}", suffix=suffix, port=s.upstream.port)
    root_pem = s.pebble.root_pem()
    host = f"via-workers.{suffix}"
    cert = wait_until(lambda: handshake(node.https_port, host, root_pem), ISSUE_DEADLINE,
                      f"the workers node to present a Pebble-issued certificate for {host}", interval=0.1,
                      on_timeout=s.logs)[0]
    assert cert["subjectAltName"] == (("DNS", host),)
    assert s.od.call("on_demand_orders")[host] == "valid"
