"""TLS termination (SNI, versions, hot swap, 421, redirect, HSTS) and upstream TLS,
through a real in-process proxy, real loopback TLS servers and trustme certificates."""
import asyncio
import json
import ssl
import warnings

import pytest
import trustme
from cryptography import x509

from dataplane import tls
from tests.dataplane.helpers import Backend, Client, Proxy, pool, route, wait_for


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def cert(cid: int, name: str, tenant, hosts: list[str], leaf) -> dict:
    return {"id": cid, "name": name, "tenant": tenant, "hosts": hosts,
            "certificate_pem": "".join(b.bytes().decode() for b in leaf.cert_chain_pems),
            "private_key_pem": leaf.private_key_pem.bytes().decode(), "fingerprint": name}


def snap(pools, routes, certs) -> dict:
    return {"schema": 1, "pools": pools, "routes": routes, "certificates": certs}


def client_ctx(ca, **kw) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def san(w) -> set[str]:
    """The DNS names of the certificate the server presented."""
    der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
    ext = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName)
    return set(ext.value.get_values_for_type(x509.DNSName))


async def handshake(port: int, ctx: ssl.SSLContext, sni: str):
    r, w = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=sni), 5)
    return r, w


@pytest.fixture
async def env():
    made = []

    async def make(snapshot, backend=None, **proxy_kw):
        b = backend or await Backend().start()
        p = await Proxy(snapshot(b.port), https=True, **proxy_kw).start()
        made.append((b, p))
        return b, p
    yield make
    for b, p in made:
        await p.close()
        await b.close()


def wild_certs(ca):
    return [
        cert(1, "platform", None, ["platform.test"], ca.issue_cert("platform.test")),
        cert(2, "exact", "acme", ["a.wild.test"], ca.issue_cert("a.wild.test")),
        cert(3, "wild", "acme", ["*.wild.test"], ca.issue_cert("*.wild.test")),
    ]


async def test_sni_picks_exact_then_wildcard_then_default(env, ca):
    certs = wild_certs(ca)
    _, p = await env(lambda port: snap([pool(1, [(1, "127.0.0.1", port)])],
                                       [route(1, ["*.wild.test", "a.wild.test"], 1, tenant="acme")],
                                       certs))
    ctx = client_ctx(ca)
    for sni, expected in (("a.wild.test", {"a.wild.test"}), ("b.wild.test", {"*.wild.test"}),
                          ("B.Wild.Test", {"*.wild.test"})):
        _, w = await handshake(p.tls_port, ctx, sni)
        assert san(w) == expected, sni
        w.close()
    # a wildcard covers one label only; unknown names and no SNI get the default
    loose = client_ctx(ca, check_hostname=False)
    for sni in ("x.y.wild.test", "unknown.test", ""):
        _, w = await handshake(p.tls_port, loose, sni)
        assert san(w) == {"platform.test"}, sni
        w.close()


async def test_default_certificate_flag_and_no_certificate_refuses(env, ca):
    certs = wild_certs(ca)
    _, p = await env(lambda port: snap([pool(1, [(1, "127.0.0.1", port)])],
                                       [route(1, ["a.wild.test"], 1)], certs),
                     default_certificate="wild")
    _, w = await handshake(p.tls_port, client_ctx(ca, check_hostname=False), "unknown.test")
    assert san(w) == {"*.wild.test"}
    w.close()
    # tenant certificates only and no default: an unknown name is refused
    _, p2 = await env(lambda port: snap([pool(1, [(1, "127.0.0.1", port)])],
                                        [route(1, ["a.wild.test"], 1)], certs[1:2]))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await handshake(p2.tls_port, client_ctx(ca, check_hostname=False), "unknown.test")


@pytest.mark.parametrize("version,ok", [
    (ssl.TLSVersion.TLSv1, False), (ssl.TLSVersion.TLSv1_1, False),
    (ssl.TLSVersion.TLSv1_2, True), (ssl.TLSVersion.TLSv1_3, True)])
async def test_only_tls_12_and_13(env, ca, version, ok):
    certs = [cert(1, "app", None, ["app.test"], ca.issue_cert("app.test"))]
    b, p = await env(lambda port: snap([pool(1, [(1, "127.0.0.1", port)])],
                                       [route(1, ["app.test"], 1)], certs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = client_ctx(ca, minimum_version=version, maximum_version=version)
    ctx.set_ciphers("ALL:@SECLEVEL=0")  # let the client at least offer old versions
    if not ok:
        with pytest.raises((ssl.SSLError, ConnectionError)) as info:
            await handshake(p.tls_port, ctx, "app.test")
        # refused by the server, not a client unable to offer the version
        assert "no protocols available" not in str(info.value).lower()
        assert not b.requests
        return
    c = await Client(p.tls_port, ssl=ctx, server_hostname="app.test").connect()
    res = await c.request(host="app.test")
    assert res.status == 200
    sslobj = c.w.get_extra_info("ssl_object")
    assert sslobj.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                                ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    if version == ssl.TLSVersion.TLSv1_2:
        assert sslobj.cipher()[0] in tls.MOZILLA_INTERMEDIATE_CIPHERS.split(":")
    assert b.requests[-1].header("X-Forwarded-Proto") == [b"https"]
    c.close()


async def test_certificate_hot_swap_keeps_existing_connections(env, ca, tmp_path):
    ca2 = trustme.CA()
    old = cert(1, "app", None, ["app.test"], ca.issue_cert("app.test"))
    new = cert(1, "app", None, ["app.test"], ca2.issue_cert("app.test"))
    make = lambda port, c: snap([pool(1, [(1, "127.0.0.1", port)])],  # noqa: E731
                                [route(1, ["app.test"], 1)], [c])
    b, p = await env(lambda port: make(port, old))
    c = await Client(p.tls_port, ssl=client_ctx(ca), server_hostname="app.test").connect()
    assert (await c.request(host="app.test")).status == 200
    p.state.apply(2, "h2", make(b.port, new))
    # the established keep-alive connection keeps working on its negotiated session
    for _ in range(3):
        assert (await c.request(host="app.test")).status == 200
    assert p.tls_server.connections  # still open
    c.close()
    # new handshakes get the new certificate (the old CA no longer verifies it)
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(p.tls_port, client_ctx(ca), "app.test")
    c2 = await Client(p.tls_port, ssl=client_ctx(ca2), server_hostname="app.test").connect()
    assert (await c2.request(host="app.test")).status == 200
    c2.close()


async def test_421_when_host_certificate_belongs_to_another_tenant(env, ca):
    certs = [cert(1, "acme", "acme", ["a.acme.test"], ca.issue_cert("a.acme.test")),
             cert(2, "globex", "globex", ["b.globex.test"], ca.issue_cert("b.globex.test")),
             cert(3, "acme2", "acme", ["c.acme.test"], ca.issue_cert("c.acme.test"))]
    b, p = await env(lambda port: snap(
        [pool(1, [(1, "127.0.0.1", port)])],
        [route(1, ["a.acme.test", "c.acme.test"], 1, tenant="acme"),
         route(2, ["b.globex.test"], 1, tenant="globex"), route(3, ["nocert.test"], 1)], certs))
    c = await Client(p.tls_port, ssl=client_ctx(ca), server_hostname="a.acme.test").connect()
    assert (await c.request(host="a.acme.test")).status == 200
    res = await c.request(host="b.globex.test")
    assert res.status == 421
    assert "error=http_request_error" in res.one("Proxy-Status")
    assert res.one("X-Request-ID")
    assert len(b.requests) == 1  # the misdirected request never reached the upstream
    # same tenant's other certificate, and a host no certificate covers: served
    assert (await c.request(host="c.acme.test")).status == 200
    assert (await c.request(host="nocert.test")).status == 200
    assert (await c.request(host="B.GLOBEX.test:443")).status == 421
    c.close()


async def test_https_redirect_and_hsts(env, ca, tmp_path):
    async def respond(req, w):
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                b"Strict-Transport-Security: max-age=1\r\n\r\nok")
    backend = await Backend(respond).start()
    certs = [cert(1, "app", None, ["app.test", "plain.test"],
                  ca.issue_cert("app.test", "plain.test"))]
    log = tmp_path / "access.log"
    b, p = await env(lambda port: snap(
        [pool(1, [(1, "127.0.0.1", port)])],
        [route(1, ["app.test"], 1, https_redirect=True, hsts_max_age=31536000),
         route(2, ["plain.test"], 1)], certs), backend=backend, log_path=str(log))
    c = await Client(p.port).connect()
    res = await c.request(host="app.test:80", path="/a/b?x=1&y=%20")
    assert res.status == 308
    assert res.one("Location") == f"https://app.test:{p.tls_port}/a/b?x=1&y=%20"
    assert res.one("Strict-Transport-Security") is None  # never over plain HTTP
    res = await c.request(method="POST", host="app.test", path="/form", body=b"abc")
    assert res.status == 308  # keep-alive survives; the body was consumed
    assert not b.requests
    assert (await c.request(host="plain.test")).status == 200
    c.close()
    # a Host that is not a plain name is never echoed into Location
    c = await Client(p.port).connect()
    assert (await c.request(host="evil.test/x.app.test")).status in (400, 404)
    c.close()

    tc = await Client(p.tls_port, ssl=client_ctx(ca), server_hostname="app.test").connect()
    res = await tc.request(host="app.test", path="/secure")
    assert res.status == 200
    assert res.header("Strict-Transport-Security") == [b"max-age=31536000"]
    res = await tc.request(host="plain.test")
    assert res.header("Strict-Transport-Security") == [b"max-age=1"]  # route without HSTS
    assert b.requests[0].header("X-Forwarded-Proto") == [b"http"]  # plain.test over HTTP
    assert b.requests[1].url == b"/secure"
    assert b.requests[1].header("X-Forwarded-Proto") == [b"https"]
    tc.close()
    p.log.flush()
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    tls_lines = [x for x in lines if x["path"] == "/secure"]
    assert tls_lines and tls_lines[0]["tls_version"] == "TLSv1.3"
    assert tls_lines[0]["sni"] == "app.test"
    redirect = [x for x in lines if x["path"] == "/a/b"][0]
    assert redirect["status"] == 308 and redirect["tls_version"] is None


# ---------------------------------------------------------------- upstream TLS

def server_ctx(leaf, seen: list | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    if seen is not None:
        ctx.sni_callback = lambda obj, name, c: seen.append(name)
    return ctx


async def upstream_env(env, ca, tls_cfg: dict, backend: Backend, host: str = "127.0.0.1"):
    return await env(lambda port: snap(
        [pool(1, [(1, host, port)], tls=tls_cfg, retries=0)],
        [route(1, ["app.test"], 1)], []), backend=backend)


async def test_upstream_tls_verified_with_ca_and_sni(env, ca):
    seen: list = []
    backend = await Backend(ssl=server_ctx(ca.issue_cert("backend.internal"), seen)).start()
    b, p = await upstream_env(env, ca, {"enabled": True, "ca_pem": ca.cert_pem.bytes().decode(),
                                        "sni": "backend.internal"}, backend)
    c = await Client(p.port).connect()
    for _ in range(2):
        res = await c.request(host="app.test")
        assert res.status == 200 and res.body == b"ok"
    c.close()
    assert seen == ["backend.internal"]  # one handshake, the connection was pooled
    assert len(b.requests) == 2


async def test_upstream_sni_defaults_to_target_host(env, ca):
    seen: list = []
    backend = await Backend(ssl=server_ctx(ca.issue_cert("localhost"), seen)).start()
    b, p = await upstream_env(env, ca, {"enabled": True,
                                        "ca_pem": ca.cert_pem.bytes().decode()},
                              backend, host="localhost")
    c = await Client(p.port).connect()
    assert (await c.request(host="app.test")).status == 200
    c.close()
    assert seen == ["localhost"]


@pytest.mark.parametrize("case", ["unknown_ca", "wrong_name"])
async def test_upstream_certificate_failure_is_502_tls_certificate_error(env, ca, case):
    other = trustme.CA()
    backend = await Backend(ssl=server_ctx(ca.issue_cert("backend.internal"))).start()
    cfg = {"enabled": True, "sni": "backend.internal",
           "ca_pem": (other if case == "unknown_ca" else ca).cert_pem.bytes().decode()}
    if case == "wrong_name":
        cfg["sni"] = "someone-else.internal"
    b, p = await upstream_env(env, ca, cfg, backend)
    c = await Client(p.port).connect()
    res = await c.request(host="app.test")
    assert res.status == 502
    assert "error=tls_certificate_error" in res.one("Proxy-Status")
    c.close()
    assert not b.requests


async def test_upstream_verify_off_accepts_untrusted(env, ca):
    backend = await Backend(ssl=server_ctx(trustme.CA().issue_cert("x.internal"))).start()
    b, p = await upstream_env(env, ca, {"enabled": True, "verify": False}, backend)
    c = await Client(p.port).connect()
    assert (await c.request(host="app.test")).status == 200
    c.close()


async def test_plain_http_upstream_behind_tls_is_502_tls_protocol_error(env, ca):
    backend = await Backend().start()  # speaks plain HTTP
    b, p = await upstream_env(env, ca, {"enabled": True, "verify": False}, backend)
    c = await Client(p.port).connect()
    res = await c.request(host="app.test")
    assert res.status == 502
    assert "error=tls_protocol_error" in res.one("Proxy-Status")
    c.close()


async def test_upstream_that_hangs_up_during_handshake_is_tls_protocol_error(env, ca):
    async def slam(r, w):
        await r.read(10)
        w.transport.abort()
    server = await asyncio.start_server(slam, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    p = await Proxy(snap([pool(1, [(1, "127.0.0.1", port)], tls={"enabled": True}, retries=0)],
                         [route(1, ["app.test"], 1)], [])).start()
    try:
        res = await (await Client(p.port).connect()).request(host="app.test")
        assert res.status == 502
        assert "error=tls_protocol_error" in res.one("Proxy-Status")
    finally:
        await p.close()
        server.close()


async def test_plain_and_tls_connections_to_one_target_are_pooled_apart(env, ca):
    """Two pools on the same host:port, one with TLS: warm connections never cross."""
    backend = await Backend(ssl=server_ctx(ca.issue_cert("backend.internal"))).start()
    cfg = {"enabled": True, "ca_pem": ca.cert_pem.bytes().decode(), "sni": "backend.internal"}
    b, p = await env(lambda port: snap(
        [pool(1, [(1, "127.0.0.1", port)], tls=cfg, retries=0),
         pool(2, [(2, "127.0.0.1", port)], retries=0)],
        [route(1, ["tls.test"], 1), route(2, ["plain.test"], 2)], []), backend=backend)
    c = await Client(p.port).connect()
    assert (await c.request(host="tls.test")).status == 200
    res = await c.request(host="plain.test")
    assert res.status == 502  # plain HTTP to a TLS server: not a reused TLS connection
    c.close()
    c = await Client(p.port).connect()
    assert (await c.request(host="tls.test")).status == 200
    c.close()
    await wait_for(lambda: len(b.requests) == 2, what="two TLS requests")


async def test_https_listener_in_node_process(ca, tmp_path):
    from tests.dataplane.helpers import NodeProcess
    b = await Backend().start()
    certs = [cert(1, "app", None, ["app.test"], ca.issue_cert("app.test"))]
    node = await NodeProcess(tmp_path, snap([pool(1, [(1, "127.0.0.1", b.port)])],
                                            [route(1, ["app.test"], 1, hsts_max_age=60)],
                                            certs)).ready()
    try:
        assert node.https_port
        c = await Client(node.https_port, ssl=client_ctx(ca), server_hostname="app.test").connect()
        res = await c.request(host="app.test")
        assert res.status == 200
        assert res.one("Strict-Transport-Security") == "max-age=60"
        c.close()
        assert b.requests[-1].header("X-Forwarded-Proto") == [b"https"]
    finally:
        node.stop()
        await b.close()
