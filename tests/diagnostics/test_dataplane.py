"""Data-plane diagnostics against real loopback servers: tail, capture, probe, the CLI."""
import asyncio
import json
import ssl
import subprocess
import sys
import time

import pytest
import trustme

from dataplane import diagnostics, schema
from dataplane.diagnostics import HUB, NodeDiagnostics
from dataplane.probe import probe
from tests.dataplane.helpers import ROOT, Backend, Proxy, get, pool, refused_port, route, simple, snapshot


@pytest.fixture(autouse=True)
def clean_hub():
    HUB.tails.clear(), HUB.captures.clear(), HUB.records.clear()
    HUB._flags()
    yield
    HUB.tails.clear(), HUB.captures.clear(), HUB.records.clear()
    HUB._flags()


@pytest.fixture
async def proxy():
    made = []

    async def make(respond=None, trusted=(), **route_kw):
        b = await Backend(respond).start()
        p = await Proxy(snapshot([pool(1, [(1, "127.0.0.1", b.port)])],
                                 [route(1, ["app.test"], 1, **route_kw),
                                  route(2, ["other.test"], 1)]), trusted).start()
        made.append((b, p))
        return b, p
    yield make
    for b, p in made:
        await p.close()
        await b.close()


def start(kind, sid, **kw):
    HUB.command({"type": kind, "id": sid, "expires": time.time() + 60, **kw})


async def test_nothing_is_collected_while_nobody_watches(proxy):
    b, p = await proxy()
    await get(p.port, host="app.test")
    assert not HUB.tailing and not HUB.capturing
    assert HUB.drain() == []


async def test_tail_sends_only_what_the_filter_selects(proxy):
    b, p = await proxy()
    start(schema.MSG_TAIL_START, "t1", filter={"routes": [1]})
    start(schema.MSG_TAIL_START, "t2", filter={"proxy_status": ["http_request_denied"]})
    await get(p.port, host="app.test", path="/a")
    await get(p.port, host="other.test", path="/b")
    r = await get(p.port, host="app.test", path="/ws",
                  headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")])
    assert r.status == 403
    out = {m["id"]: m for m in HUB.drain()}
    lines = out["t1"]["lines"]
    assert [ln["path"] for ln in lines] == ["/a", "/ws"]
    assert lines[0]["route_id"] == 1 and lines[0]["status"] == 200
    assert lines[0]["upstream_addr"] == f"127.0.0.1:{b.port}"
    assert lines[0]["proxy_status"] is None and lines[0]["reason"] is None
    denied = out["t2"]["lines"]
    assert len(denied) == 1
    assert denied[0]["status"] == 403
    assert denied[0]["proxy_status"] == "http_request_denied"
    assert denied[0]["reason"] == "websocket_denied"
    HUB.command({"type": schema.MSG_TAIL_STOP, "id": "t1"})
    HUB.command({"type": schema.MSG_TAIL_STOP, "id": "t2"})
    assert not HUB.tailing


async def test_tail_lines_name_endings_as_the_access_log_does(tmp_path):
    b = await Backend().start()
    log_path = tmp_path / "access.log"
    p = await Proxy(snapshot([pool(1, [(1, "127.0.0.1", b.port)]),
                              pool(2, [(2, "127.0.0.1", refused_port())])],
                             [route(1, ["app.test"], 1), route(2, ["down.test"], 2)]),
                    log_path=str(log_path)).start()
    try:
        start(schema.MSG_TAIL_START, "t", filter={})
        await get(p.port, host="app.test", path="/ws",
                  headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")])
        await get(p.port, host="down.test", path="/down")
        await get(p.port, host="nowhere.test", path="/none")
        (msg,) = HUB.drain()
        p.log.flush()
    finally:
        await p.close()
        await b.close()
    logged = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [(ln["proxy_status"], ln["reason"]) for ln in msg["lines"]] == [
        ("http_request_denied", "websocket_denied"), ("connection_refused", None),
        ("destination_not_found", None)]
    assert [(ln["path"], ln["proxy_status"], ln["reason"]) for ln in msg["lines"]] == \
        [(ln["path"], ln["proxy_status"], ln["reason"]) for ln in logged]


async def test_a_slow_viewer_loses_lines_counted_never_blocks(proxy, monkeypatch):
    monkeypatch.setattr(diagnostics, "TAIL_BUFFER", 3)
    b, p = await proxy()
    start(schema.MSG_TAIL_START, "t", filter={"status": ["2xx"], "clients": ["127.0.0.0/8"]})
    for _ in range(7):
        await get(p.port, host="app.test")
    (msg,) = HUB.drain()
    assert len(msg["lines"]) == 3 and msg["dropped"] == 4
    await get(p.port, host="app.test")
    (msg,) = HUB.drain()
    assert len(msg["lines"]) == 1 and msg["dropped"] == 0


async def test_tail_session_expires_by_itself(proxy):
    b, p = await proxy()
    HUB.command({"type": schema.MSG_TAIL_START, "id": "t", "filter": {}, "expires": time.time() - 1})
    await get(p.port, host="app.test")
    assert HUB.drain() == []
    assert not HUB.tailing


async def test_capture_records_both_sides_redacted_and_stops_after_n(proxy):
    async def respond(req, w):
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: sid=abcdef; Path=/; HttpOnly\r\n"
                b"X-Backend: yes\r\n\r\nok")
    b, p = await proxy(respond)
    start(schema.MSG_CAPTURE_START, "c1", route=1, count=2)
    hdrs = [("Authorization", "Bearer secret-token-123"), ("Cookie", "sid=s3cr3t; theme=dark"),
            ("X-Forwarded-For", "203.0.113.7")]
    for _ in range(3):
        await get(p.port, host="app.test", path="/x", headers=hdrs)
    await get(p.port, host="other.test")
    msgs = HUB.drain()
    recs = [m["record"] for m in msgs if m["type"] == schema.MSG_CAPTURE_RECORD]
    assert len(recs) == 2 and not HUB.capturing
    rec = recs[0]
    text = json.dumps(rec)
    assert "secret-token-123" not in text and "s3cr3t" not in text and "abcdef" not in text
    client = dict(rec["client_request"]["headers"])
    assert client["Authorization"].startswith("Bearer [redacted")
    assert client["Cookie"] == "sid=[redacted]; theme=[redacted]"
    assert client["X-Forwarded-For"] == "203.0.113.7"
    up = dict(rec["upstream_request"]["headers"])
    assert up["X-Forwarded-For"] == "127.0.0.1"
    assert up["Host"] == "app.test" and up["Via"] == "1.1 switchyard"
    assert rec["upstream_response"]["status"] == 200
    assert dict(rec["upstream_response"]["headers"])["Set-Cookie"].startswith("sid=[redacted]")
    assert rec["client_response"]["status"] == 200
    assert rec["target"] == f"127.0.0.1:{b.port}"
    assert rec["timings"]["total"] >= 0 and rec["client_trusted"] is False
    assert any("X-Forwarded-For".lower() in n and "trusted_proxies" in n for n in rec["notes"])


async def test_capture_of_a_request_the_proxy_answers_itself(proxy):
    b, p = await proxy()
    start(schema.MSG_CAPTURE_START, "c", route=1, count=1)
    await get(p.port, host="app.test", headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")])
    (m,) = HUB.drain()
    rec = m["record"]
    assert rec["status"] == 403 and rec["upstream_request"] is None
    assert rec["proxy_status"] == "http_request_denied" and rec["reason"] == "websocket_denied"
    assert dict(rec["client_response"]["headers"])["Proxy-Status"].startswith("switchyard; error=http_request_denied")
    assert any("websocket" in n.lower() for n in rec["notes"])


# ---------------------------------------------------------------- probe

async def test_probe_refused_names_the_address():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = await probe(f"http://127.0.0.1:{port}/", timeout=2)
    assert not r["ok"] and r["failed_step"] == "tcp"
    assert r["error"] == f"connection refused: nothing is listening on 127.0.0.1:{port}"
    assert r["dns"]["literal"] is True


async def test_probe_dns_failure():
    r = await probe("http://no-such-host.invalid/", timeout=3)
    assert r["failed_step"] == "dns"
    assert "no-such-host.invalid" in r["error"]


async def test_probe_policy_applies_to_the_resolved_address():
    r = await probe("http://localhost:9/", policy={"restricted": True, "allowed_networks": []})
    assert r["failed_step"] == "policy"
    assert "destination_ip_prohibited" in r["error"] and "loopback" in r["error"]
    r = await probe("http://127.0.0.1:9/", policy={"restricted": True,
                                                    "allowed_networks": ["127.0.0.0/8"]})
    assert r["failed_step"] == "tcp"  # allowed: it got as far as connecting


async def test_probe_http_ok_and_response_timeout():
    b = await Backend(simple(b"hi", extra=b"Server: unit\r\nAuthorization: Basic Zm9v\r\n")).start()

    async def never(req, w):
        await asyncio.sleep(5)
    slow = await Backend(never).start()
    try:
        r = await probe(f"http://127.0.0.1:{b.port}/p?q=1", timeout=2)
        assert r["ok"] and r["http"]["status"] == 200 and r["tls"] is None
        assert ["Server", "unit"] in r["http"]["headers"]
        assert dict(r["http"]["headers"])["Authorization"] == "Basic [redacted, 4 bytes]"
        assert r["http"]["ttfb_ms"] >= 0 and r["tcp"]["time_ms"] >= 0
        r = await probe(f"http://127.0.0.1:{slow.port}/", timeout=0.3)
        assert r["failed_step"] == "http" and "no response headers within 0.3 s" in r["error"]
    finally:
        await b.close()
        await slow.close()


@pytest.fixture
def chain():
    ca = trustme.CA()
    inter = ca.create_child_ca()
    leaf = inter.issue_cert("backend.test")
    return ca, leaf


async def tls_backend(leaf, full_chain=True):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if full_chain:
        leaf.configure_cert(ctx)
    else:
        import os
        import tempfile
        with tempfile.NamedTemporaryFile("wb", delete=False) as f:
            f.write(leaf.cert_chain_pems[0].bytes())
            f.write(leaf.private_key_pem.bytes())
        ctx.load_cert_chain(f.name)
        os.unlink(f.name)
    return await Backend(simple(b"secure"), ssl=ctx).start()


async def test_probe_tls_verified_and_verify_failure_reason(chain):
    ca, leaf = chain
    b = await tls_backend(leaf)
    try:
        ok = await probe(f"https://127.0.0.1:{b.port}/", sni="backend.test",
                         ca_pem=ca.cert_pem.bytes().decode())
        assert ok["ok"], ok
        assert ok["tls"]["verified"] is True and ok["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
        assert "backend.test" in ok["tls"]["peer"]["sans"]
        assert len(ok["tls"]["chain"]) == 2 and ok["tls"]["cipher"]
        bad = await probe(f"https://127.0.0.1:{b.port}/", sni="backend.test")
        assert bad["failed_step"] == "tls" and bad["tls"]["verified"] is False
        assert bad["error"].startswith("certificate verify failed: unable to get local issuer")
        assert bad["tls"]["chain"], "the presented chain is reported even when it does not verify"
        insecure = await probe(f"https://127.0.0.1:{b.port}/", sni="backend.test", insecure=True)
        assert insecure["ok"] and insecure["tls"]["verified"] is None
    finally:
        await b.close()


async def test_probe_tls_to_an_ip_address_without_sni():
    ca = trustme.CA()
    b = await tls_backend(ca.issue_cert("127.0.0.1"))
    try:
        url = f"https://127.0.0.1:{b.port}/"
        ok = await probe(url, ca_pem=ca.cert_pem.bytes().decode())
        assert ok["ok"], ok
        assert ok["tls"]["verified"] is True and ok["tls"]["sni"] is None
        assert "127.0.0.1" in ok["tls"]["peer"]["sans"]
        insecure = await probe(url, insecure=True)
        assert insecure["ok"] and insecure["tls"]["verified"] is None
        bad = await probe(url)
        assert bad["failed_step"] == "tls" and bad["tls"]["verified"] is False
    finally:
        await b.close()


def test_cli_probe_text_json_and_exit_codes():
    r = subprocess.run([sys.executable, "-m", "dataplane", "probe", "http://127.0.0.1:9/", "--timeout", "2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "TCP     FAIL  127.0.0.1:9" in r.stdout and "connection refused" in r.stdout
    r = subprocess.run([sys.executable, "-m", "dataplane", "probe", "http://127.0.0.1:9/", "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    data = json.loads(r.stdout)
    assert data["failed_step"] == "tcp" and data["tcp"]["attempts"][0]["address"] == "127.0.0.1:9"


# ---------------------------------------------------------------- the node's command handler

async def test_node_diagnostics_answers_probe_tls_check_and_synthetic(proxy, chain):
    b, p = await proxy()
    sent = []

    async def send(m):
        sent.append(m)
    nd = NodeDiagnostics(send, node_name="n1", listeners={"http": f"127.0.0.1:{p.port}", "https": ""})
    assert nd.handle({"type": "probe", "id": "p1", "url": f"http://127.0.0.1:{b.port}/"})
    assert nd.handle({"type": "tls.check", "id": "t1", "sni": "x.test"})
    assert nd.handle({"type": "synthetic", "id": "s1", "route": 1, "host": "app.test", "path": "/syn",
                      "headers": [["X-Forwarded-For", "198.51.100.1"]]})
    runner = asyncio.ensure_future(nd.run())
    try:
        for _ in range(200):
            if {(m["type"], m["id"]) for m in sent} >= {("probe.result", "p1"), ("probe.result", "t1"),
                                                         ("synthetic.result", "s1")}:
                break
            await asyncio.sleep(0.05)
    finally:
        runner.cancel()
    by = {}
    for m in sent:
        by.setdefault((m["type"], m["id"]), m)
    assert by[("probe.result", "p1")]["result"]["ok"] is True
    assert by[("probe.result", "p1")]["result"]["node"] == "n1"
    assert by[("probe.result", "t1")]["result"]["error"] == "this node has no HTTPS listener"
    syn = by[("synthetic.result", "s1")]["result"]
    assert syn["ok"] and syn["response"]["http"]["status"] == 200
    cap = syn["capture"]
    assert cap["route_id"] == 1 and cap["request_id"] == "syn-s1"
    assert dict(cap["upstream_request"]["headers"])["X-Forwarded-For"] == "127.0.0.1"
    assert ("capture.record", "s1") in by  # also delivered for storage
    assert not HUB.capturing
