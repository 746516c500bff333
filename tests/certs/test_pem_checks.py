import datetime as dt

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from controlplane import pem
from controlplane.pem import inspect_pem


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def intermediate(ca):
    return ca.create_child_ca()


@pytest.fixture(scope="module")
def leaf(intermediate):
    return intermediate.issue_cert("shop.example.test", "*.api.example.test")


def text(blob):
    return blob.bytes().decode()


def chain_pem(leaf):
    return "".join(text(b) for b in leaf.cert_chain_pems)


def self_signed(bits=2048, days=30, start_days=-1, ca=False):
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old.example.test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=start_days))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("old.example.test")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def test_it_accepts_a_complete_chain_trusted_by_the_operator_bundle(ca, leaf):
    report = inspect_pem(chain_pem(leaf), text(leaf.private_key_pem), ca_bundle_pem=text(ca.cert_pem),
                         hosts=("shop.example.test", "v1.api.example.test"))
    assert report.ok, report.errors
    assert report.chain_status == pem.CHAIN_COMPLETE
    assert report.warnings == []
    assert report.sans == ["shop.example.test", "*.api.example.test"]
    assert len(report.chain) == 2 and len(report.fingerprint) == 95


def test_it_names_the_missing_intermediate(ca, intermediate, leaf):
    only_leaf = text(leaf.cert_chain_pems[0])
    report = inspect_pem(only_leaf, text(leaf.private_key_pem), ca_bundle_pem=text(ca.cert_pem))
    assert report.ok
    assert report.chain_status == pem.CHAIN_INCOMPLETE
    issuer = x509.load_pem_x509_certificate(intermediate.cert_pem.bytes()).subject.rfc4514_string()
    assert any(issuer in w and "missing" in w for w in report.warnings)


def test_it_warns_when_the_root_is_not_trusted(leaf):
    report = inspect_pem(chain_pem(leaf), text(leaf.private_key_pem))
    assert report.ok
    assert report.chain_status == pem.CHAIN_INCOMPLETE  # trustme's root is in no store


def test_it_refuses_a_key_that_does_not_match(leaf, intermediate):
    other = intermediate.issue_cert("other.example.test")
    report = inspect_pem(chain_pem(leaf), text(other.private_key_pem))
    assert "does not match" in report.errors["private_key_pem"][0]


def test_it_refuses_a_passphrase_protected_key(leaf):
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    locked = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.BestAvailableEncryption(b"secret")).decode()
    report = inspect_pem(chain_pem(leaf), locked)
    assert "passphrase" in report.errors["private_key_pem"][0]


def test_it_refuses_unparseable_pem():
    report = inspect_pem("hello", "")
    assert "certificate_pem" in report.errors
    report = inspect_pem("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    assert "could not be parsed" in report.errors["certificate_pem"][0]


def test_it_refuses_a_ca_certificate_as_leaf(ca):
    report = inspect_pem(text(ca.cert_pem))
    assert "CA certificate" in report.errors["certificate_pem"][0]


def test_it_refuses_a_chain_in_the_wrong_order(leaf):
    reversed_chain = "".join(text(b) for b in reversed(leaf.cert_chain_pems))
    report = inspect_pem(reversed_chain)
    assert report.errors["certificate_pem"]


def test_it_refuses_small_rsa_keys_and_expired_certificates():
    small, key = self_signed(bits=1024)
    assert "1024 bits" in inspect_pem(small, key).errors["certificate_pem"][0]
    expired, key = self_signed(days=-1, start_days=-10)
    assert "expired" in inspect_pem(expired, key).errors["certificate_pem"][0]


def test_it_warns_for_not_yet_valid_and_uncovered_hosts():
    future, key = self_signed(start_days=2, days=30)
    report = inspect_pem(future, key, hosts=("shop.example.test",))
    assert report.ok
    assert any("not valid before" in w for w in report.warnings)
    assert any("does not cover shop.example.test" in w for w in report.warnings)
    assert report.chain_status == pem.CHAIN_UNTRUSTED


def test_wildcards_cover_one_label_only():
    sans = ["*.example.test"]
    assert pem.covers(sans, "a.example.test")
    assert not pem.covers(sans, "a.b.example.test")
    assert not pem.covers(sans, "example.test")
