"""The checker against real loopback servers (no Django)."""
from __future__ import annotations

import asyncio
import ssl
import time

import pytest
import trustme

from controlplane.health.checker import CheckSpec, check_http, check_tcp, parse_expected, run_checks
from tests.health.conftest import free_port


async def test_it_passes_a_status_in_the_expected_range(upstreams):
    u = upstreams.add(204)
    r = await check_http("127.0.0.1", u.port, path="/healthz", method="GET", host_header="",
                         expected="200-299", timeout=2.0)
    assert r.ok and r.status == 204 and r.reason == "status 204 received"
    assert 0 < r.elapsed < 2.0


async def test_it_fails_a_status_outside_the_range_naming_the_status(upstreams):
    u = upstreams.add(503)
    r = await check_http("127.0.0.1", u.port, path="/", method="GET", host_header="",
                         expected="200-399", timeout=2.0)
    assert not r.ok and r.status == 503 and r.reason == "status 503 received"


async def test_it_accepts_a_listed_single_status(upstreams):
    u = upstreams.add(404)
    r = await check_http("127.0.0.1", u.port, path="/", method="HEAD", host_header="",
                         expected="200-399,404", timeout=2.0)
    assert r.ok and r.status == 404


async def test_it_sends_method_path_host_header_and_connection_close(upstreams):
    u = upstreams.add(200)
    await check_http("127.0.0.1", u.port, path="/ready?deep=1", method="HEAD",
                     host_header="app.example.com", expected="200", timeout=2.0)
    head = u.requests[-1].decode()
    assert head.startswith("HEAD /ready?deep=1 HTTP/1.1\r\n")
    assert "\r\nHost: app.example.com\r\n" in head
    assert "\r\nConnection: close\r\n" in head


async def test_it_defaults_the_host_header_to_the_target_address(upstreams):
    u = upstreams.add(200)
    await check_http("127.0.0.1", u.port, path="/", method="GET", host_header="",
                     expected="200", timeout=2.0)
    assert f"\r\nHost: 127.0.0.1:{u.port}\r\n" in u.requests[-1].decode()


async def test_it_reports_a_timeout_when_the_upstream_never_answers(upstreams):
    u = upstreams.add(200)
    u.hang = True
    started = time.monotonic()
    r = await check_http("127.0.0.1", u.port, path="/", method="GET", host_header="",
                         expected="200", timeout=0.3)
    assert not r.ok and r.status is None and r.reason == "timeout after 0.3s"
    assert 0.25 < time.monotonic() - started < 1.5


async def test_it_reports_connection_refused():
    r = await check_http("127.0.0.1", free_port(), path="/", method="GET", host_header="",
                         expected="200", timeout=2.0)
    assert not r.ok and r.reason == "connection refused"


async def test_it_reports_a_dns_failure():
    r = await check_http("no-such-host.invalid", 80, path="/", method="GET", host_header="",
                         expected="200", timeout=5.0)
    assert not r.ok and r.reason.startswith("DNS failure: ")


async def test_it_reports_an_invalid_response(upstreams):
    u = upstreams.add(200)
    u.raw = b"SSH-2.0-OpenSSH_9.6\r\n"
    r = await check_http("127.0.0.1", u.port, path="/", method="GET", host_header="",
                         expected="200", timeout=2.0)
    assert not r.ok and r.reason.startswith("invalid HTTP response")


async def test_it_reports_a_connection_closed_without_a_response(upstreams):
    u = upstreams.add(200)
    u.raw = b""
    r = await check_http("127.0.0.1", u.port, path="/", method="GET", host_header="",
                         expected="200", timeout=2.0)
    assert not r.ok and r.reason == "connection closed before a response"


async def test_it_skips_interim_responses(upstreams):
    u = upstreams.add(200)
    u.raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    r = await check_http("127.0.0.1", u.port, path="/", method="GET", host_header="",
                         expected="200", timeout=2.0)
    assert r.ok and r.status == 200


async def test_it_refuses_a_path_that_would_break_the_request_line():
    r = await check_http("127.0.0.1", 1, path="/x HTTP/1.1\r\nEvil: 1", method="GET",
                         host_header="", expected="200", timeout=1.0)
    assert not r.ok and r.reason.startswith("invalid check:")


async def test_it_checks_tcp_connect_and_refusal(upstreams):
    u = upstreams.add(200)
    ok = await check_tcp("127.0.0.1", u.port, timeout=2.0)
    assert ok.ok and ok.reason == "connected" and ok.status is None
    u.stop()
    down = await check_tcp("127.0.0.1", u.port, timeout=2.0)
    assert not down.ok and down.reason == "connection refused"


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def _server_ctx(ca):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("backend.test", "127.0.0.1").configure_cert(ctx)
    return ctx


async def test_it_checks_over_tls_with_the_pool_ca_and_sni(upstreams, ca):
    u = upstreams.add(200, ssl=_server_ctx(ca))
    ca_pem = ca.cert_pem.bytes().decode()
    r = await check_http("127.0.0.1", u.port, path="/", method="GET", host_header="backend.test",
                         expected="200", timeout=3.0, tls=True, sni="backend.test", ca_pem=ca_pem)
    assert r.ok, r.reason
    t = await check_tcp("127.0.0.1", u.port, timeout=3.0, tls=True, sni="backend.test", ca_pem=ca_pem)
    assert t.ok and t.reason == "TLS handshake completed"


async def test_it_reports_tls_verification_failures(upstreams, ca):
    u = upstreams.add(200, ssl=_server_ctx(ca))
    r = await check_http("127.0.0.1", u.port, path="/", method="GET", host_header="",
                         expected="200", timeout=3.0, tls=True, sni="backend.test")
    assert not r.ok and r.reason.startswith("TLS: certificate verify failed"), r.reason
    unverified = await check_http("127.0.0.1", u.port, path="/", method="GET", host_header="",
                                  expected="200", timeout=3.0, tls=True, verify=False)
    assert unverified.ok


async def test_it_reports_tls_to_a_plain_http_server():
    async def plain(reader, writer):  # answers like an HTTP server given a ClientHello
        writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(plain, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        r = await check_http("127.0.0.1", port, path="/", method="GET", host_header="",
                             expected="200", timeout=3.0, tls=True, verify=False)
    finally:
        server.close()
    assert not r.ok and r.reason.startswith("TLS: "), r.reason


async def test_it_denies_addresses_the_upstream_policy_forbids(upstreams):
    u = upstreams.add(200)
    r = await check_http("localhost", u.port, path="/", method="GET", host_header="",
                         expected="200", timeout=2.0, policy=lambda ip: False)
    assert not r.ok and r.reason.startswith("address not allowed by the upstream policy")
    assert not u.requests
    allowed = await check_http("127.0.0.1", u.port, path="/", method="GET", host_header="",
                               expected="200", timeout=2.0, policy=lambda ip: ip == "127.0.0.1")
    assert allowed.ok


def test_it_parses_expected_status_lists():
    p = parse_expected("200-399, 404")
    assert p(200) and p(399) and p(404)
    assert not p(199) and not p(400) and not p(503)
    for bad in ("", "2xx", "399-200", "200-", "600"):
        with pytest.raises(ValueError):
            parse_expected(bad)


async def test_it_runs_many_checks_concurrently_in_input_order(upstreams):
    ups = [upstreams.add(200 if i % 3 else 503) for i in range(30)]
    hanging = [upstreams.add(200) for _ in range(20)]
    for h in hanging:
        h.hang = True
    specs = [CheckSpec("127.0.0.1", u.port, expected="200", timeout=0.5) for u in ups + hanging]
    started = time.monotonic()
    results = await run_checks(specs, concurrency=50)
    took = time.monotonic() - started
    assert [r.status for r in results[:30]] == [200 if i % 3 else 503 for i in range(30)]
    assert all(r.reason == "timeout after 0.5s" for r in results[30:])
    assert took < 1.5  # the 20 timeouts ran in parallel, not one after another

    started = time.monotonic()
    await run_checks([CheckSpec("127.0.0.1", h.port, timeout=0.3) for h in hanging[:6]],
                     concurrency=2)
    assert time.monotonic() - started >= 0.85  # 3 batches of 0.3 s: the limit holds


async def test_it_never_raises_from_run_checks():
    specs = [CheckSpec("127.0.0.1", 0, type="tcp", timeout=0.5),
             CheckSpec("127.0.0.1", free_port(), expected="nonsense", timeout=0.5)]
    results = await run_checks(specs)
    assert len(results) == 2 and not any(r.ok for r in results)
    assert results[1].reason.startswith("invalid check:")
