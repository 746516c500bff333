"""The SNI table is scoped by owner: a handshake for a name is
answered with a certificate of the owner of the routes serving that name (then the
platform's), never with a certificate another tenant uploaded for it."""
import ssl

import pytest
import trustme

from tests.dataplane.helpers import Backend, Client, NodeProcess, Proxy, pool, route
from tests.dataplane.test_tls import cert, client_ctx, handshake, san, snap


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def hijack_snapshot(ca, a_port: int, b_port: int) -> dict:
    """Tenant a owns a.example.test, tenant b owns b.example.test; a's certificate (the
    lower id, an exact name) also names b's shop host, which b serves with a wildcard."""
    return snap(
        [pool(1, [(1, "127.0.0.1", a_port)]), pool(2, [(2, "127.0.0.1", b_port)])],
        [route(1, ["www.a.example.test"], 1, tenant="a"),
         route(2, ["shop.b.example.test"], 2, tenant="b")],
        [cert(1, "a-cert", "a", ["www.a.example.test", "shop.b.example.test"],
              ca.issue_cert("www.a.example.test", "shop.b.example.test")),
         cert(2, "b-wild", "b", ["*.b.example.test"], ca.issue_cert("*.b.example.test"))])


async def test_another_tenants_certificate_is_never_presented_for_a_host(ca, tmp_path):
    backend_a, backend_b = await Backend().start(), await Backend().start()
    node = await NodeProcess(tmp_path, hijack_snapshot(ca, backend_a.port, backend_b.port)).ready()
    try:
        shop = await Client(node.https_port, ssl=client_ctx(ca),
                            server_hostname="shop.b.example.test").connect()
        assert san(shop.w) == {"*.b.example.test"}
        assert (await shop.request(host="shop.b.example.test")).status == 200
        shop.close()
        assert len(backend_b.requests) == 1 and not backend_a.requests

        www = await Client(node.https_port, ssl=client_ctx(ca),
                           server_hostname="www.a.example.test").connect()
        assert san(www.w) == {"www.a.example.test", "shop.b.example.test"}
        assert (await www.request(host="www.a.example.test")).status == 200
        # b's host over a connection that a's certificate opened: misdirected
        assert (await www.request(host="shop.b.example.test")).status == 421
        www.close()
        assert len(backend_a.requests) == 1 and len(backend_b.requests) == 1
    finally:
        node.stop()
        await backend_a.close()
        await backend_b.close()


@pytest.fixture
async def proxy():
    made = []

    async def make(snapshot, **kw):
        b = await Backend().start()
        p = await Proxy(snapshot(b.port), https=True, **kw).start()
        made.append((b, p))
        return p
    yield make
    for b, p in made:
        await p.close()
        await b.close()


async def presented(p: Proxy, ca, sni: str) -> set[str]:
    _, w = await handshake(p.tls_port, client_ctx(ca, check_hostname=False), sni)
    names = san(w)
    w.close()
    return names


async def test_a_name_gets_its_owners_certificate_then_the_platforms(proxy, ca):
    certs = [cert(1, "intruder", "a", ["x.shop.b.example.test", "plain.b.example.test"],
                  ca.issue_cert("x.shop.b.example.test", "plain.b.example.test")),
             cert(2, "platform", None, ["plain.b.example.test", "edge.test"],
                  ca.issue_cert("plain.b.example.test", "edge.test"))]
    p = await proxy(lambda port: snap(
        [pool(1, [(1, "127.0.0.1", port)])],
        [route(1, ["*.b.example.test"], 1, tenant="b")], certs))
    # b serves these names (through its wildcard route) and has no certificate of its
    # own: the platform's certificate or the default, never a's
    assert await presented(p, ca, "plain.b.example.test") == {"plain.b.example.test", "edge.test"}
    assert await presented(p, ca, "x.shop.b.example.test") == {"plain.b.example.test", "edge.test"}


async def test_names_no_route_serves_get_only_platform_certificates(proxy, ca):
    certs = [cert(1, "a-cert", "a", ["spare.a.example.test"], ca.issue_cert("spare.a.example.test")),
             cert(2, "platform", None, ["edge.test"], ca.issue_cert("edge.test"))]
    p = await proxy(lambda port: snap([pool(1, [(1, "127.0.0.1", port)])],
                                      [route(1, ["www.a.example.test"], 1, tenant="a")], certs))
    assert await presented(p, ca, "spare.a.example.test") == {"edge.test"}


async def test_a_tenants_default_certificate_is_not_presented_for_another_owners_host(proxy, ca):
    certs = [cert(1, "a-cert", "a", ["www.a.example.test"], ca.issue_cert("www.a.example.test"))]
    p = await proxy(lambda port: snap(
        [pool(1, [(1, "127.0.0.1", port)])],
        [route(1, ["www.a.example.test"], 1, tenant="a"),
         route(2, ["shop.b.example.test"], 1, tenant="b")], certs), default_certificate="a-cert")
    assert await presented(p, ca, "unknown.test") == {"www.a.example.test"}  # the operator's default
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await presented(p, ca, "shop.b.example.test")
