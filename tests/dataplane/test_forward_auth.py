"""Forward auth on the node (dataplane.forwardauth): the snapshot's forward_auth section,
and a real in-process proxy asking real auth servers on loopback before forwarding."""
import asyncio
import json

import pytest

from dataplane import schema
from tests.dataplane.helpers import Backend, Client, NodeProcess, Proxy, get, pool, route, snapshot
from tests.support import free_port

LOOPBACK_ALLOWED = ["127.0.0.0/8"]


def portal(login: str = "https://login.test/"):
    """An auth service: without its session cookie, a cookie and a 302 to its login page;
    with it, 200 and the user in Remote-User."""
    async def respond(req, w):
        cookies = b"; ".join(req.header("cookie"))
        if b"session=alice" in cookies:
            w.write(b"HTTP/1.1 200 OK\r\nRemote-User: alice\r\nRemote-Groups: admins,dev\r\n"
                    b"X-Other: no\r\nContent-Length: 2\r\n\r\nok")
        else:
            body = b"<a href='%b'>login</a>" % login.encode()
            w.write(b"HTTP/1.1 302 Found\r\nLocation: %b\r\nSet-Cookie: flow=1; Path=/\r\n"
                    b"Content-Type: text/html\r\nContent-Length: %d\r\n\r\n%b" % (login.encode(), len(body), body))
    return respond


def hanging():
    async def respond(req, w):
        await asyncio.sleep(3600)
    return respond


def fa(url, headers=("Remote-User", "Remote-Groups"), timeout=5.0, **kw):
    return {"url": url, "response_headers": list(headers), "timeout": timeout, **kw}


async def test_a_302_reaches_the_client_and_a_2xx_forwards_with_the_auth_headers():
    auth = await Backend(portal()).start()
    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])],
                    [route(1, ["app.test"], 1, forward_auth=fa(f"http://127.0.0.1:{auth.port}/api/authz/forward-auth"))])
    proxy = await Proxy(snap).start()
    try:
        r = await get(proxy.port, host="app.test", path="/docs?page=2",
                      headers=[("Remote-User", "mallory"), ("Authorization", "Bearer x")])
        assert r.status == 302
        assert r.one("location") == "https://login.test/" and r.one("set-cookie") == "flow=1; Path=/"
        assert b"login" in r.body and r.one("x-request-id")
        assert backend.requests == []  # the upstream saw nothing
        ask = auth.requests[0]
        assert (ask.method, ask.url) == (b"GET", b"/api/authz/forward-auth")
        assert ask.header("x-forwarded-method") == [b"GET"]
        assert ask.header("x-forwarded-proto") == [b"http"]
        assert ask.header("x-forwarded-host") == [b"app.test"]
        assert ask.header("x-forwarded-uri") == [b"/docs?page=2"]
        assert ask.header("x-forwarded-for") == [b"127.0.0.1"]
        assert ask.header("authorization") == [b"Bearer x"] and ask.header("remote-user") == []
        assert ask.body_len == 0

        c = await Client(proxy.port).connect()
        try:  # with the session: forwarded, with the auth service's user, twice on one connection
            for _ in range(2):
                r = await c.request(path="/x", headers=[("Cookie", "session=alice"), ("Remote-User", "mallory"),
                                                        ("remote-groups", "root")])
                assert r.status == 200 and r.body == b"ok"
        finally:
            c.close()
        seen = backend.requests[-1]
        assert seen.header("remote-user") == [b"alice"]  # not the client's forged one
        assert seen.header("remote-groups") == [b"admins,dev"]
        assert seen.header("x-other") == [] and seen.header("cookie") == [b"session=alice"]
        assert len(backend.requests) == 2 and len(auth.requests) == 3
        assert auth.connections <= 2  # the subrequests reuse a keep-alive connection
    finally:
        await proxy.close()
        await auth.close()
        await backend.close()


async def test_client_copies_are_removed_even_when_the_auth_answer_lacks_the_header():
    async def bare(req, w):
        w.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    auth = await Backend(bare).start()
    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])],
                    [route(1, ["app.test"], 1, forward_auth=fa(f"http://127.0.0.1:{auth.port}/"))])
    proxy = await Proxy(snap).start()
    try:
        r = await get(proxy.port, host="app.test", headers=[("Remote-User", "mallory"), ("REMOTE-GROUPS", "x")])
        assert r.status == 200
        assert backend.requests[0].header("remote-user") == [] and backend.requests[0].header("remote-groups") == []
    finally:
        await proxy.close()
        await auth.close()
        await backend.close()


async def test_a_request_body_sent_while_the_auth_service_thinks_is_forwarded_whole():
    gate = asyncio.Event()

    async def slow_ok(req, w):
        await gate.wait()
        w.write(b"HTTP/1.1 200 OK\r\nRemote-User: bob\r\nContent-Length: 0\r\n\r\n")
    auth = await Backend(slow_ok).start()
    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])],
                    [route(1, ["app.test"], 1, forward_auth=fa(f"http://127.0.0.1:{auth.port}/"),
                           max_body_size=10 * 1024 * 1024)])
    proxy = await Proxy(snap).start()
    c = await Client(proxy.port).connect()
    try:
        body = bytes(range(256)) * 1024  # 256 KiB: more than the proxy holds while waiting
        await c.send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % len(body)
                      + body[:1000])
        await asyncio.wait_for(_until(lambda: auth.requests), 30)
        c.w.write(body[1000:])  # the rest while the auth service has not answered
        gate.set()
        r = await c.response(timeout=60)
        assert r.status == 200
        assert backend.requests[0].body == body and backend.requests[0].header("remote-user") == [b"bob"]
    finally:
        c.close()
        await proxy.close()
        await auth.close()
        await backend.close()


async def _until(cond):
    while not cond():
        await asyncio.sleep(0.02)


async def test_a_hanging_or_absent_auth_service_gives_503_and_nothing_is_forwarded():
    auth = await Backend(hanging()).start()
    backend = await Backend().start()
    refused = free_port()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])],
                    [route(1, ["hang.test"], 1, forward_auth=fa(f"http://127.0.0.1:{auth.port}/", timeout=0.5)),
                     route(2, ["down.test"], 1, forward_auth=fa(f"http://127.0.0.1:{refused}/"))])
    proxy = await Proxy(snap).start()
    try:
        r = await get(proxy.port, host="hang.test", method="POST", body=b"payload")
        assert r.status == 503
        assert r.one("proxy-status") == 'switchyard; error=http_response_timeout; details="forward auth"'
        r = await get(proxy.port, host="down.test")
        assert r.status == 503
        assert r.one("proxy-status") == 'switchyard; error=connection_refused; details="forward auth"'
        assert backend.requests == []
    finally:
        await proxy.close()
        await auth.close()
        await backend.close()


async def test_a_tenant_auth_url_never_reaches_the_node_admin_port(tmp_path):
    """Checked on connect, as for pools: allowed_networks covering loopback do not open
    the node's own listeners (its admin port here) to a tenant's forward auth."""
    backend = await Backend().start()
    admin = free_port()
    policy = {"restricted": True, "allowed_networks": LOOPBACK_ALLOWED}
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)], tenant="acme", policy=policy)],
                    [route(1, ["app.test"], 1, tenant="acme",
                           forward_auth=fa(f"http://127.0.0.1:{admin}/", allowed_networks=LOOPBACK_ALLOWED))])
    node = NodeProcess(tmp_path, snap, "--admin", f"127.0.0.1:{admin}")
    try:
        await node.ready()
        r = await get(node.port, host="app.test")
        assert r.status == 503
        assert r.one("proxy-status") == 'switchyard; error=destination_ip_prohibited; details="forward auth"'
        assert backend.requests == []
    finally:
        node.stop()
        await backend.close()


def test_the_schema_checks_the_forward_auth_section():
    base = {"pools": [pool(1, [(1, "127.0.0.1", 9)])],
            "routes": [route(1, ["a.test"], 1, forward_auth=fa("https://auth.example.com/oauth2/auth"))]}
    got = schema.parse_snapshot(base).routes[0].forward_auth
    assert got == schema.ForwardAuth("https://auth.example.com/oauth2/auth", ("Remote-User", "Remote-Groups"), 5.0)
    assert schema.parse_snapshot({**base, "routes": [route(1, ["a.test"], 1)]}).routes[0].forward_auth is None
    bad = json.loads(json.dumps(base))
    bad["routes"][0]["forward_auth"] = fa("ftp://auth.example.com/", headers=("Content-Length", "X-Forwarded-User",
                                                                              "Bad Name", "Remote-User", "remote-user"),
                                          timeout=0)
    with pytest.raises(schema.SnapshotInvalid) as exc:
        schema.parse_snapshot(bad)
    p = "routes[0].forward_auth"
    assert {e.path for e in exc.value.errors} == {
        f"{p}.url", f"{p}.timeout", f"{p}.response_headers[0]", f"{p}.response_headers[1]",
        f"{p}.response_headers[2]", f"{p}.response_headers[4]"}
    for url in ("http://user:pw@auth.test/", "http://auth.test/#x", "http://auth test/", "auth.test/x"):
        bad["routes"][0]["forward_auth"] = fa(url)
        with pytest.raises(schema.SnapshotInvalid) as exc:
            schema.parse_snapshot(bad)
        assert [e.path for e in exc.value.errors] == [f"{p}.url"], url
    # a tenant's route: no loopback, private or metadata address unless its policy allows it
    tenant = json.loads(json.dumps(base))
    tenant["pools"][0]["tenant"] = tenant["routes"][0]["tenant"] = "acme"
    for url in ("http://127.0.0.1:9091/", "http://169.254.169.254/", "http://[::1]/", "http://localhost/"):
        tenant["routes"][0]["forward_auth"] = fa(url)
        with pytest.raises(schema.SnapshotInvalid) as exc:
            schema.parse_snapshot(tenant)
        assert [e.path for e in exc.value.errors] == [f"{p}.url"], url
    tenant["routes"][0]["forward_auth"] = fa("http://10.1.2.3/", allowed_networks=["10.0.0.0/8"])
    parsed = schema.parse_snapshot(tenant).routes[0].forward_auth
    assert parsed.policy == schema.UpstreamPolicy(True, ("10.0.0.0/8",))
    # a platform route may ask anything
    base["routes"][0]["forward_auth"] = fa("http://127.0.0.1:9091/api/verify")
    assert schema.parse_snapshot(base).routes[0].forward_auth.policy.restricted is False


async def test_the_tail_and_the_inspector_say_forward_auth_answered():
    import time

    from dataplane.diagnostics import HUB
    HUB.tails.clear(), HUB.captures.clear(), HUB.records.clear()
    HUB._flags()
    auth = await Backend(portal()).start()
    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])],
                    [route(1, ["app.test"], 1, forward_auth=fa(f"http://127.0.0.1:{auth.port}/")),
                     route(2, ["hang.test"], 1, forward_auth=fa(f"http://127.0.0.1:{free_port()}/"))])
    proxy = await Proxy(snap).start()
    try:
        HUB.command({"type": schema.MSG_TAIL_START, "id": "t", "expires": time.time() + 60,
                     "filter": {"proxy_status": ["http_request_denied", "connection_refused"]}})
        HUB.command({"type": schema.MSG_CAPTURE_START, "id": "c", "route": 1, "count": 2,
                     "expires": time.time() + 60})
        assert (await get(proxy.port, host="app.test")).status == 302
        ok = await get(proxy.port, host="app.test", headers=[("Cookie", "session=alice"), ("Remote-User", "eve")])
        assert ok.status == 200
        assert (await get(proxy.port, host="hang.test")).status == 503
        out = HUB.drain()
        lines = [ln for m in out if m["type"] == schema.MSG_TAIL_LINES for ln in m["lines"]]
        assert [(ln["status"], ln["proxy_status"], ln["reason"]) for ln in lines] == [
            (302, "http_request_denied", "forward_auth_denied"),
            (503, "connection_refused", "forward_auth_connection_refused")]
        recs = [m["record"] for m in out if m["type"] == schema.MSG_CAPTURE_RECORD]
        denied, allowed = recs
        assert denied["status"] == 302 and denied["upstream_request"] is None
        assert dict(denied["client_response"]["headers"])["Location"] == "https://login.test/"
        assert any("forward auth" in n for n in denied["notes"])
        assert dict(allowed["upstream_request"]["headers"])["Remote-User"] == "alice"
    finally:
        HUB.tails.clear(), HUB.captures.clear(), HUB.records.clear()
        HUB._flags()
        await proxy.close()
        await auth.close()
        await backend.close()


async def test_an_https_auth_url_is_verified_against_the_system_cas():
    """An auth service whose certificate no system CA signed is never asked: 503
    tls_certificate_error, nothing forwarded."""
    import ssl

    import trustme
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    auth = await Backend(portal(), ssl=server_ctx).start()
    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])],
                    [route(1, ["app.test"], 1, forward_auth=fa(f"https://127.0.0.1:{auth.port}/"))])
    proxy = await Proxy(snap).start()
    try:
        r = await get(proxy.port, host="app.test", headers=[("Cookie", "session=alice")])
        assert r.status == 503
        assert r.one("proxy-status") == 'switchyard; error=tls_certificate_error; details="forward auth"'
        assert backend.requests == [] and auth.requests == []
    finally:
        await proxy.close()
        await auth.close()
        await backend.close()


async def test_an_auth_url_that_leads_back_through_the_proxy_is_a_loop_not_a_storm():
    backend = await Backend().start()
    proxy = await Proxy(None).start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])],
                    [route(1, ["app.test", "127.0.0.1"], 1,
                           forward_auth=fa(f"http://127.0.0.1:{proxy.port}/auth"))])
    proxy.state.apply(1, "h1", snap)
    try:
        r = await get(proxy.port, host="app.test")
        assert r.status == 508  # the subrequest came back with this proxy's Via: refused, relayed
        assert backend.requests == []
    finally:
        await proxy.close()
        await backend.close()


async def test_a_new_snapshot_keeps_the_auth_services_warm_connections():
    auth = await Backend(portal()).start()
    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])],
                    [route(1, ["app.test"], 1, forward_auth=fa(f"http://127.0.0.1:{auth.port}/"))])
    proxy = await Proxy(snap).start()
    try:
        assert (await get(proxy.port, host="app.test", headers=[("Cookie", "session=alice")])).status == 200
        snap["routes"][0]["priority"] = 5  # another version: the tables are rebuilt
        proxy.state.apply(2, "h2", snap)
        assert (await get(proxy.port, host="app.test", headers=[("Cookie", "session=alice")])).status == 200
        assert len(auth.requests) == 2 and auth.connections == 1  # the pooled connection survived
        del snap["routes"][0]["forward_auth"]
        proxy.state.apply(3, "h3", snap)  # no route asks it any more: its connections close
        assert (await get(proxy.port, host="app.test")).status == 200
        assert len(auth.requests) == 2
        assert not any(hp.port == auth.port for hp in proxy.state.upstreams.pools.values())
    finally:
        await proxy.close()
        await auth.close()
        await backend.close()
