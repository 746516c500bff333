"""ACME challenges answered by the node: the snapshot's ``acme_challenges`` (validation
with paths, the gate), HTTP-01 on the plain listener of a real node process, and
TLS-ALPN-01 (RFC 8737) on its TLS listener, with real OpenSSL clients."""
import asyncio
import datetime
import hashlib
import ssl

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from dataplane import acme, schema, tls
from dataplane.applier import NodeState, check_snapshot
from tests.dataplane.helpers import Backend, Client, NodeProcess, Proxy, pool, route, snapshot

ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
THUMBPRINT = "9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
KEY_AUTH = f"{TOKEN}.{THUMBPRINT}"


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def challenge_cert(host: str, key_auth: str = KEY_AUTH) -> tuple[str, str]:
    """A TLS-ALPN-01 certificate as an ACME client makes it: self-signed, the host as its
    only name, the critical acmeIdentifier extension holding sha256(key authorization)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    digest = hashlib.sha256(key_auth.encode()).digest()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER, b"\x04\x20" + digest),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def certificate(cid: int, hosts: list[str], leaf) -> dict:
    return {"id": cid, "name": f"cert{cid}", "tenant": None, "hosts": hosts,
            "certificate_pem": "".join(b.bytes().decode() for b in leaf.cert_chain_pems),
            "private_key_pem": leaf.private_key_pem.bytes().decode(), "fingerprint": f"f{cid}"}


def with_challenges(port: int, ca, http01=(), tls_alpn01=()) -> dict:
    snap = snapshot([pool(1, [(1, "127.0.0.1", port)])], [route(1, ["app.test"], 1)])
    snap["certificates"] = [certificate(1, ["app.test"], ca.issue_cert("app.test"))]
    snap["acme_challenges"] = {"http01": list(http01), "tls_alpn01": list(tls_alpn01)}
    return snap


def alpn_entry(host: str, key_auth: str = KEY_AUTH) -> dict:
    pem, key = challenge_cert(host, key_auth)
    return {"host": host, "certificate_pem": pem, "private_key_pem": key}


def refusal(snap: dict, check=schema.parse_snapshot) -> dict[str, str]:
    with pytest.raises(schema.SnapshotInvalid) as exc:
        check(snap)
    return {e.path: e.message for e in exc.value.errors}


# ---------------------------------------------------------------- schema and gate

def test_a_snapshot_with_challenges_parses_and_applies(ca):
    snap = with_challenges(8080, ca, [{"token": TOKEN, "key_authorization": KEY_AUTH}],
                           [alpn_entry("App.Test")])
    check_snapshot(snap)
    state = NodeState()
    state.apply(1, "h", snap)
    assert set(state.tables.acme.http01) == {TOKEN.encode()}
    assert set(state.tables.acme.tls_alpn01) == {"app.test"}
    assert schema.parse_snapshot(with_challenges(8080, ca)).acme_challenges == schema.AcmeChallenges()
    del snap["acme_challenges"]
    state.apply(2, "h2", snap)
    assert not state.tables.acme.http01 and not state.tables.acme.tls_alpn01


@pytest.mark.parametrize("entry, path", [
    ({"token": "a b", "key_authorization": "a b.x"}, "acme_challenges.http01[0].token"),
    ({"token": "", "key_authorization": ".x"}, "acme_challenges.http01[0].token"),
    ({"token": "t" * 257, "key_authorization": "t" * 257 + ".x"}, "acme_challenges.http01[0].token"),
    ({"token": TOKEN, "key_authorization": f"other.{THUMBPRINT}"},
     "acme_challenges.http01[0].key_authorization"),
    ({"token": TOKEN, "key_authorization": TOKEN}, "acme_challenges.http01[0].key_authorization"),
    ({"token": TOKEN, "key_authorization": f"{TOKEN}.a+b/c="},
     "acme_challenges.http01[0].key_authorization"),
    ({"token": TOKEN, "key_authorization": f"{TOKEN}.x\r\nX-Injected: 1"},
     "acme_challenges.http01[0].key_authorization"),
    ({"token": TOKEN}, "acme_challenges.http01[0].key_authorization"),
])
def test_bad_http01_entries_are_refused_with_their_path(ca, entry, path):
    assert list(refusal(with_challenges(80, ca, [entry]))) == [path]


def test_a_duplicate_token_is_refused(ca):
    entry = {"token": TOKEN, "key_authorization": KEY_AUTH}
    assert list(refusal(with_challenges(80, ca, [entry, entry]))) == [
        "acme_challenges.http01[1].token"]


def test_bad_tls_alpn01_entries_are_refused_with_their_path(ca):
    good = alpn_entry("a.test")
    normal = ca.issue_cert("a.test")
    cases = [
        ({**good, "host": "*.a.test"}, "host"),
        ({**good, "host": "a..test"}, "host"),
        ({**good, "certificate_pem": "not a certificate"}, "certificate_pem"),
        ({**good, "certificate_pem": "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n"},
         "certificate_pem"),
        ({**good, "certificate_pem": normal.cert_chain_pems[0].bytes().decode(),
          "private_key_pem": normal.private_key_pem.bytes().decode()}, "certificate_pem"),
        ({**good, "private_key_pem": "-----BEGIN ENCRYPTED PRIVATE KEY-----\n"}, "private_key_pem"),
    ]
    for entry, field in cases:
        assert list(refusal(with_challenges(80, ca, tls_alpn01=[entry]))) == [
            f"acme_challenges.tls_alpn01[0].{field}"], field
    twice = with_challenges(80, ca, tls_alpn01=[good, {**good, "host": "A.test"}])
    assert list(refusal(twice)) == ["acme_challenges.tls_alpn01[1].host"]
    assert list(refusal({**with_challenges(80, ca), "acme_challenges": []})) == ["acme_challenges"]


def test_the_gate_refuses_what_only_openssl_can_tell(ca):
    """PEM text that parses but does not load: the node's own build names the value."""
    good = alpn_entry("a.test")
    other_key = alpn_entry("a.test")["private_key_pem"]
    mismatched = with_challenges(80, ca, tls_alpn01=[{**good, "private_key_pem": other_key}])
    schema.parse_snapshot(mismatched)
    assert list(refusal(mismatched, check_snapshot)) == ["acme_challenges.tls_alpn01[0].private_key_pem"]
    body = good["certificate_pem"].splitlines()
    body[3] = body[3][:10] + ("A" if body[3][10] != "A" else "B") + body[3][11:]
    corrupt = with_challenges(80, ca, tls_alpn01=[{**good, "certificate_pem": "\n".join(body)}])
    assert list(refusal(corrupt, check_snapshot)) == ["acme_challenges.tls_alpn01[0].certificate_pem"]
    bad_token = with_challenges(80, ca, [{"token": "a/b", "key_authorization": "a/b.x"}])
    assert list(refusal(bad_token, check_snapshot)) == ["acme_challenges.http01[0].token"]


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_control_plane_gate_refuses_a_bad_challenge(ca):
    from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

    from controlplane.publishing import gate
    snap = with_challenges(80, ca, [{"token": TOKEN, "key_authorization": f"{TOKEN}.bad/thumbprint"}])
    snap["certificates"] = []
    with pytest.raises(ValidationError) as exc:
        gate.check_snapshot(snap)
    assert [m.split(":")[0] for m in exc.value.message_dict[NON_FIELD_ERRORS]] == [
        "acme_challenges.http01[0].key_authorization"]


# ---------------------------------------------------------------- HTTP-01

def test_http01_answers_are_prebuilt_bytes():
    table = acme.build_http01([schema.Http01Challenge(TOKEN, KEY_AUTH)])
    path = acme.HTTP01_PATH + TOKEN.encode()
    status, lines, body = acme.http01(table, b"GET", path)
    assert (status, body) == (b"200 OK", KEY_AUTH.encode())
    assert b"Content-Type: text/plain\r\n" in lines and b"Content-Length: %d\r\n" % len(body) in lines
    assert acme.http01(table, b"HEAD", path) == (b"200 OK", lines, b"")
    assert acme.http01(table, b"GET", path + b"x") is None
    assert acme.http01(table, b"GET", acme.HTTP01_PATH) is None
    assert acme.http01(table, b"POST", path)[0] == b"405 Method Not Allowed"


@pytest.fixture
async def node(tmp_path, ca):
    started = []

    async def start(http01=(), tls_alpn01=()):
        backend = await Backend().start()
        n = NodeProcess(tmp_path, with_challenges(backend.port, ca, http01, tls_alpn01))
        started.append((n, backend))
        return await n.ready(), backend
    yield start
    for n, backend in started:
        n.stop()
        await backend.close()


async def test_a_node_answers_http01_itself_and_never_forwards_it(node, ca):
    n, backend = await node([{"token": TOKEN, "key_authorization": KEY_AUTH}])
    c = await Client(n.port).connect()
    try:
        ok = await c.request(path=f"/.well-known/acme-challenge/{TOKEN}", host="app.test")
        assert (ok.status, ok.body, ok.one("content-type")) == (200, KEY_AUTH.encode(), "text/plain")
        head = await c.request("HEAD", f"/.well-known/acme-challenge/{TOKEN}?x=1", host="unknown.test")
        assert (head.status, head.one("content-length")) == (200, str(len(KEY_AUTH)))
        missing = await c.request(path="/.well-known/acme-challenge/unknown-token", host="app.test")
        assert missing.status == 404
        assert missing.one("proxy-status").startswith("switchyard; error=destination_not_found")
        post = await c.request("POST", f"/.well-known/acme-challenge/{TOKEN}", body=b"{}")
        assert (post.status, post.one("allow")) == (405, "GET, HEAD")
        assert backend.requests == []
        other = await c.request(path="/.well-known/security.txt", host="app.test")
        assert other.status == 200 and [r.url for r in backend.requests] == [b"/.well-known/security.txt"]
    finally:
        c.close()


async def test_the_https_listener_does_not_answer_http01(node, ca):
    n, backend = await node([{"token": TOKEN, "key_authorization": KEY_AUTH}])
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    c = await Client(n.https_port, ssl=ctx, server_hostname="app.test").connect()
    try:
        res = await c.request(path=f"/.well-known/acme-challenge/{TOKEN}", host="app.test")
    finally:
        c.close()
    assert (res.status, res.body) == (200, b"ok")
    assert [r.url for r in backend.requests] == [f"/.well-known/acme-challenge/{TOKEN}".encode()]


# ---------------------------------------------------------------- TLS-ALPN-01

def client_hello(alpn: list[str] | None, sni: str = "app.test") -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    out = ssl.MemoryBIO()
    with pytest.raises(ssl.SSLWantReadError):
        ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=sni).do_handshake()
    return out.read()


def test_the_client_hello_alpn_offer_is_read_from_the_first_bytes():
    hello = client_hello(["http/1.1", "acme-tls/1"])
    assert all(acme.offers_acme_tls(hello[:n]) is None for n in range(len(hello)))
    assert acme.offers_acme_tls(hello) is True
    # the same ClientHello split over two handshake records
    body = hello[5:]
    split = b"".join(b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part
                     for part in (body[:40], body[40:]))
    assert acme.offers_acme_tls(split[:-1]) is None and acme.offers_acme_tls(split) is True
    assert acme.offers_acme_tls(client_hello(["http/1.1"])) is False
    assert acme.offers_acme_tls(client_hello(None)) is False
    assert acme.offers_acme_tls(b"GET / HTTP/1.1\r\n") is False
    assert acme.offers_acme_tls(hello[:9] + b"\xff" * (len(hello) - 9)) is False


def peer(sslobj) -> tuple[x509.Certificate, str | None]:
    return x509.load_der_x509_certificate(sslobj.getpeercert(binary_form=True)), \
        sslobj.selected_alpn_protocol()


def acme_digest(cert: x509.Certificate) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    except x509.ExtensionNotFound:
        return None
    assert ext.critical
    return ext.value.value[2:]


def test_a_client_hello_arriving_in_pieces_still_gets_the_challenge(ca):
    """The listener's own connection object, fed the ClientHello 7 bytes at a time."""
    state = NodeState()
    state.apply(1, "h", with_challenges(80, ca, tls_alpn01=[alpn_entry("app.test")]))
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = tls.listener_context(state).wrap_bio(server_in, server_out, server_side=True)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname, cctx.verify_mode = False, ssl.CERT_NONE
    cctx.set_alpn_protocols(["acme-tls/1"])
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = cctx.wrap_bio(client_in, client_out, server_hostname="app.test")
    for _ in range(10):
        for obj in (client, server):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
        data = client_out.read()
        for i in range(0, len(data), 7):
            server_in.write(data[i:i + 7])
            try:
                server.do_handshake()
            except ssl.SSLWantReadError:
                pass
        client_in.write(server_out.read())
        if client.selected_alpn_protocol() and server.selected_alpn_protocol():
            break
    cert, alpn = peer(client)
    assert alpn == "acme-tls/1"
    assert acme_digest(cert) == hashlib.sha256(KEY_AUTH.encode()).digest()


async def tls_handshake(port: int, sni: str, alpn: list[str] | None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    r, w = await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=sni), 5)
    cert, selected = peer(w.get_extra_info("ssl_object"))
    return r, w, cert, selected


async def check_tls_alpn01(port: int) -> None:
    digest = hashlib.sha256(KEY_AUTH.encode()).digest()
    r, w, cert, alpn = await tls_handshake(port, "app.test", ["acme-tls/1"])
    try:
        assert (alpn, acme_digest(cert)) == ("acme-tls/1", digest)
        assert cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == ["app.test"]
        assert await asyncio.wait_for(r.read(), 5) == b""  # closed after the handshake
    finally:
        w.close()
    for sni, offer in (("app.test", ["http/1.1"]), ("app.test", None),
                       ("other.test", ["acme-tls/1"]), ("app.test", ["h2", "http/1.1"])):
        r, w, cert, alpn = await tls_handshake(port, sni, offer)
        w.close()
        assert acme_digest(cert) is None, (sni, offer)
        assert cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == ["app.test"]
        assert alpn == ("http/1.1" if offer and "http/1.1" in offer else None)


async def test_a_node_answers_tls_alpn01_only_to_handshakes_offering_acme_tls(node, ca):
    n, _ = await node(tls_alpn01=[alpn_entry("app.test")])
    await check_tls_alpn01(n.https_port)


async def test_the_in_process_listener_answers_tls_alpn01_on_the_asyncio_loop(ca):
    backend = await Backend().start()
    p = await Proxy(with_challenges(backend.port, ca, tls_alpn01=[alpn_entry("app.test")]),
                    https=True).start()
    try:
        await check_tls_alpn01(p.tls_port)
        p.state.apply(2, "h2", with_challenges(backend.port, ca))
        r, w, cert, alpn = await tls_handshake(p.tls_port, "app.test", ["acme-tls/1"])
        w.close()
        assert (acme_digest(cert), alpn) == (None, None)
    finally:
        await p.close()
        await backend.close()
