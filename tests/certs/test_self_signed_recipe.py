"""OpenSSL 3's usual self-signed recipe marks the certificate CA:TRUE: accepted with a
warning, while a CA certificate uploaded instead of the server's, and a real chain
with the CA first, are still refused."""
from __future__ import annotations

import datetime as dt
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controlplane import pem
from controlplane.pem import inspect_pem


def openssl_req(tmp_path, *args: str) -> tuple[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "30", *args], check=True, capture_output=True, timeout=120)
    return cert.read_text(), key.read_text()


def test_it_accepts_the_recipe_with_a_warning(tmp_path):
    cert, key = openssl_req(tmp_path, "-subj", "/CN=x.example.test", "-addext", "subjectAltName=DNS:x.example.test")
    report = inspect_pem(cert, key, hosts=("x.example.test",))
    assert report.ok, report.errors
    assert report.sans == ["x.example.test"]
    assert pem.SELF_SIGNED_CA_WARNING in report.warnings
    assert report.chain_status == pem.CHAIN_UNTRUSTED


def test_it_does_not_warn_when_the_recipe_says_ca_false(tmp_path):
    cert, key = openssl_req(tmp_path, "-subj", "/CN=y.example.test", "-addext", "subjectAltName=DNS:y.example.test",
                            "-addext", "basicConstraints=critical,CA:FALSE")
    report = inspect_pem(cert, key)
    assert report.ok and pem.SELF_SIGNED_CA_WARNING not in report.warnings


def test_it_refuses_a_ca_that_names_no_host_and_says_how_to_make_one(tmp_path):
    cert, key = openssl_req(tmp_path, "-subj", "/CN=My Root CA")
    report = inspect_pem(cert, key)
    assert report.errors["certificate_pem"] == [pem.CA_ALONE_ERROR]
    assert "subjectAltName=DNS:" in pem.CA_ALONE_ERROR


def self_signed_ca(usage) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client.example.test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("client.example.test")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize("usage, accepted", [(ExtendedKeyUsageOID.SERVER_AUTH, True),
                                             (ExtendedKeyUsageOID.CLIENT_AUTH, False)])
def test_it_accepts_a_self_signed_ca_only_if_it_may_serve_tls(usage, accepted):
    report = inspect_pem(self_signed_ca(usage))
    assert report.ok is accepted, report.errors


def test_it_keeps_the_chain_order_check_for_real_chains():
    import trustme
    leaf = trustme.CA().create_child_ca().issue_cert("order.example.test")
    ca_first = "".join(p.bytes().decode() for p in reversed(leaf.cert_chain_pems))
    report = inspect_pem(ca_first)
    assert any("put the server (leaf) certificate first" in e for e in report.errors["certificate_pem"])
