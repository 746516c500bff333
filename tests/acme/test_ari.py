"""The ACME Renewal Information client (RFC 9773) against recorded responses.

Debian's Pebble 2.4 predates ARI, so the client is tested against the RFC's own example
and against responses recorded in the RFC's format, served by a local HTTP server."""
import datetime as dt
import http.server
import random
import threading

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from controlplane.acme import ari

NOW = dt.datetime(2025, 1, 2, 0, 0, tzinfo=dt.timezone.utc)
# RFC 9773 section 4.3.1's example response.
RECORDED = (b'{"suggestedWindow": {"start": "2025-01-02T04:00:00Z", "end": "2025-01-03T04:00:00Z"}, '
            b'"explanationURL": "https://acme.example.com/docs/ari"}')


def rfc_example_certificate() -> str:
    """A certificate with the RFC's example authority key id and serial number."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ari.example")])
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0x87654321).not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=89))
            .add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(Encoding.PEM).decode()


def test_cert_id_is_the_rfc_example():
    assert ari.cert_id(rfc_example_certificate()) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_recorded_response_gives_the_window_and_the_retry_time():
    info = ari.parse(200, "21600", RECORDED, NOW)
    assert info.start == dt.datetime(2025, 1, 2, 4, tzinfo=dt.timezone.utc)
    assert info.end == dt.datetime(2025, 1, 3, 4, tzinfo=dt.timezone.utc)
    assert info.retry_at == NOW + dt.timedelta(hours=6)
    assert info.explanation_url == "https://acme.example.com/docs/ari"


def test_renewal_time_is_chosen_inside_the_window():
    info = ari.parse(200, None, RECORDED, NOW)
    picks = [info.pick_time(random.Random(seed)) for seed in range(50)]
    assert all(info.start <= t <= info.end for t in picks)
    assert len(set(picks)) > 1


@pytest.mark.parametrize("header, delay", [
    ("1", dt.timedelta(minutes=1)),                   # too eager: one minute
    ("86400", dt.timedelta(hours=12)),                # too lazy: twice a day at least
    (None, ari.DEFAULT_RETRY),
    ("soon", ari.DEFAULT_RETRY),
    ("Thu, 02 Jan 2025 03:00:00 GMT", dt.timedelta(hours=3)),  # an HTTP date
])
def test_retry_after_is_clamped(header, delay):
    assert ari.retry_at(header, NOW) == NOW + delay


@pytest.mark.parametrize("status, body, message", [
    (404, b"{}", "answered 404"),
    (200, b"not json", "malformed"),
    (200, b'{"suggestedWindow": {"start": "2025-01-03T04:00:00Z", "end": "2025-01-02T04:00:00Z"}}',
     "ends before it starts"),
    (200, b'{"suggestedWindow": {"start": "2025-01-02T04:00:00Z"}}', "end is missing"),
])
def test_unusable_answers_raise_with_a_retry_time(status, body, message):
    with pytest.raises(ari.AriError, match=message) as raised:
        ari.parse(status, "120", body, NOW)
    assert raised.value.retry_at == NOW + dt.timedelta(minutes=2)


class Recorded(http.server.BaseHTTPRequestHandler):
    responses: dict = {}
    seen: list = []

    def do_GET(self):
        self.seen.append(self.path)
        status, headers, body = self.responses.get(self.path, (404, {}, b"{}"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def recorded_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorded)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Recorded.responses, Recorded.seen = {}, []
    yield f"http://127.0.0.1:{server.server_address[1]}/renewal-info"
    server.shutdown()
    server.server_close()


def test_fetch_asks_the_certificate_s_url_and_reads_the_answer(recorded_server):
    cert_pem = trustme.CA().issue_cert("shop.example.test").cert_chain_pems[0].bytes().decode()
    path = "/renewal-info/" + ari.cert_id(cert_pem)
    Recorded.responses[path] = (200, {"Content-Type": "application/json", "Retry-After": "3600"}, RECORDED)
    info = ari.fetch(recorded_server, cert_pem, now=NOW)
    assert Recorded.seen == [path]
    assert (info.start, info.end) == (dt.datetime(2025, 1, 2, 4, tzinfo=dt.timezone.utc),
                                      dt.datetime(2025, 1, 3, 4, tzinfo=dt.timezone.utc))
    assert info.retry_at == NOW + dt.timedelta(hours=1)


def test_fetch_of_an_unknown_certificate_raises(recorded_server):
    cert_pem = trustme.CA().issue_cert("other.example.test").cert_chain_pems[0].bytes().decode()
    with pytest.raises(ari.AriError, match="404"):
        ari.fetch(recorded_server, cert_pem, now=NOW)


def test_unreachable_server_raises_and_retries_later():
    cert_pem = rfc_example_certificate()
    with pytest.raises(ari.AriError, match="unreachable") as raised:
        ari.fetch("http://127.0.0.1:9/renewal-info", cert_pem, now=NOW)
    assert raised.value.retry_at == NOW + ari.DEFAULT_RETRY
