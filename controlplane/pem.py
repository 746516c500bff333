"""PEM parsing and certificate checks. Pure: no database, no Django models.

``inspect_pem`` answers what an operator checks by hand with openssl: does the
PEM parse, does the key match the leaf, is the chain ordered and does every
signature verify, does it reach a trusted root (else: which intermediate is
missing), is it valid now, is the key strong enough, do the SANs cover the hosts.
Errors refuse the upload; warnings are stored and shown.
"""
from __future__ import annotations

import datetime as dt
import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
MIN_RSA_BITS = 2048

CHAIN_COMPLETE = "complete"        # reaches a trusted root
CHAIN_INCOMPLETE = "incomplete"    # an intermediate is missing
CHAIN_UNTRUSTED = "untrusted"      # ends at a root nobody trusts (self-signed, private CA)


@dataclass
class CertReport:
    errors: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    subject: str = ""
    issuer: str = ""
    sans: list[str] = field(default_factory=list)
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    fingerprint: str = ""
    chain_status: str = ""
    chain: list[dict] = field(default_factory=list)

    def error(self, field_name: str, message: str) -> None:
        self.errors.setdefault(field_name, []).append(message)

    @property
    def ok(self) -> bool:
        return not self.errors


def inspect_pem(certificate_pem: str, private_key_pem: str | None = None, *,
                hosts: tuple[str, ...] = (), ca_bundle_pem: str = "",
                now: dt.datetime | None = None) -> CertReport:
    report = CertReport()
    now = now or dt.datetime.now(dt.timezone.utc)
    chain = _load_chain(certificate_pem, report)
    if not chain:
        return report
    leaf = chain[0]
    _describe(leaf, chain, report)
    _check_leaf(leaf, report, now, len(chain))
    if private_key_pem is not None:
        _check_key(leaf, private_key_pem, report)
    _check_chain(chain, report, ca_bundle_pem, now)
    _check_hosts(report, hosts)
    return report


def _load_chain(pem: str, report: CertReport) -> list[x509.Certificate]:
    if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
        report.error("certificate_pem", "is not a PEM certificate (expected -----BEGIN CERTIFICATE-----)")
        return []
    try:
        return x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        report.error("certificate_pem", f"could not be parsed: {exc}")
        return []


def _name(name: x509.Name) -> str:
    return name.rfc4514_string()


def _sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return []
    return [n.lower() for n in ext.value.get_values_for_type(x509.DNSName)]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value.ca)
    except x509.ExtensionNotFound:
        return False


def _describe(leaf: x509.Certificate, chain: list[x509.Certificate], report: CertReport) -> None:
    report.subject = _name(leaf.subject)
    report.issuer = _name(leaf.issuer)
    report.sans = _sans(leaf)
    if not report.sans:
        report.sans = [a.value.lower() for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
                       if isinstance(a.value, str)]
    report.not_before = leaf.not_valid_before_utc
    report.not_after = leaf.not_valid_after_utc
    report.fingerprint = leaf.fingerprint(hashes.SHA256()).hex(":").upper()
    report.chain = [{"subject": _name(c.subject), "issuer": _name(c.issuer),
                     "not_after": c.not_valid_after_utc.isoformat()} for c in chain]


SELF_SIGNED_CA_WARNING = (
    "this self-signed certificate is marked as a CA (basicConstraints CA:TRUE, what `openssl req -x509` "
    "writes by default): fine for testing, but some clients (Firefox among them) refuse a CA certificate as "
    "a server certificate; to avoid it add -addext basicConstraints=critical,CA:FALSE")
CA_ALONE_ERROR = (
    "is a CA certificate (CA:TRUE) that names no host, not a server certificate: upload the server's own "
    "certificate, then its chain. For a self-signed test certificate, name the host: openssl req -x509 "
    "-newkey rsa:2048 -nodes -subj /CN=example.com -addext subjectAltName=DNS:example.com")


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and _signed_by(cert, cert)


def _names_hosts(cert: x509.Certificate) -> bool:
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return False
    return bool(ext.value.get_values_for_type(x509.DNSName) or ext.value.get_values_for_type(x509.IPAddress))


def _serves_tls(cert: x509.Certificate) -> bool:
    """No extended key usage, or one that allows a TLS server."""
    try:
        usages = cert.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    except x509.ExtensionNotFound:
        return True
    return ExtendedKeyUsageOID.SERVER_AUTH in usages or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages


def _check_ca_leaf(leaf: x509.Certificate, chain_length: int, report: CertReport) -> None:
    """A CA certificate first: a mis-ordered chain, a CA uploaded instead of the server's
    certificate, or OpenSSL 3's usual self-signed recipe (CA:TRUE plus the host names),
    which works and is only warned about."""
    if not _is_ca(leaf):
        return
    if chain_length > 1:
        report.error("certificate_pem", "the first certificate is a CA certificate; put the server (leaf) "
                                        "certificate first, then its chain")
    elif _self_signed(leaf) and _names_hosts(leaf) and _serves_tls(leaf):
        report.warnings.append(SELF_SIGNED_CA_WARNING)
    else:
        report.error("certificate_pem", CA_ALONE_ERROR)


def _check_leaf(leaf: x509.Certificate, report: CertReport, now: dt.datetime, chain_length: int = 1) -> None:
    _check_ca_leaf(leaf, chain_length, report)
    if leaf.not_valid_after_utc <= now:
        report.error("certificate_pem", f"expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    elif leaf.not_valid_before_utc > now:
        report.warnings.append(f"not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    key = leaf.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        report.error("certificate_pem", f"RSA key is {key.key_size} bits; at least {MIN_RSA_BITS} required")


def _check_key(leaf: x509.Certificate, key_pem: str, report: CertReport) -> None:
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except TypeError:
        report.error("private_key_pem", "is protected by a passphrase; upload the key without one "
                                        "(openssl pkey -in key.pem -out plain.pem)")
        return
    except (ValueError, UnsupportedAlgorithm) as exc:
        report.error("private_key_pem", f"could not be parsed as a PEM private key: {exc}")
        return
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey,
                            ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        report.error("private_key_pem", "unsupported key type")
        return
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        report.error("private_key_pem", "does not match the certificate (the leaf's public key differs)")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False


def _check_chain(chain: list[x509.Certificate], report: CertReport, ca_bundle_pem: str,
                 now: dt.datetime) -> None:
    for i, (child, parent) in enumerate(zip(chain, chain[1:]), start=1):
        if not _signed_by(child, parent):
            report.error("certificate_pem", f"certificate {i + 1} in the chain ({_name(parent.subject)}) did not "
                                            f"issue certificate {i} ({_name(child.subject)}); order the chain "
                                            "leaf first, each followed by its issuer")
            return
        if parent.not_valid_after_utc <= now:
            report.warnings.append(f"intermediate {_name(parent.subject)} expired")
    last = chain[-1]
    roots = _trust_store(ca_bundle_pem)
    if any(_signed_by(last, root) for root in roots.get(last.issuer.public_bytes(), ())):
        report.chain_status = CHAIN_COMPLETE
    elif last.issuer == last.subject and _signed_by(last, last):
        report.chain_status = CHAIN_UNTRUSTED
        report.warnings.append(f"the chain ends at {_name(last.subject)}, which is not a trusted root "
                               "(add it to the CA bundle setting if it is your own CA)")
    else:
        report.chain_status = CHAIN_INCOMPLETE
        report.warnings.append(f"incomplete chain: the intermediate certificate issued to "
                               f"{_name(last.issuer)} is missing; append it after the certificate")


def _trust_store(extra_pem: str) -> dict[bytes, list[x509.Certificate]]:
    store: dict[bytes, list[x509.Certificate]] = {}
    for cert in _system_roots() + _parse_bundle(extra_pem):
        store.setdefault(cert.subject.public_bytes(), []).append(cert)
    return store


@functools.lru_cache(maxsize=1)
def _system_roots() -> list[x509.Certificate]:
    path = Path(SYSTEM_CA_BUNDLE)
    return _parse_bundle(path.read_text()) if path.exists() else []


def _parse_bundle(pem: str) -> list[x509.Certificate]:
    if not pem or "-----BEGIN CERTIFICATE-----" not in pem:
        return []
    try:
        with warnings.catch_warnings():  # some distribution roots have non-positive serials
            warnings.simplefilter("ignore")
            return x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        return []


def covers(sans: list[str], host: str) -> bool:
    """True when a SAN list covers ``host`` (one wildcard label, RFC 6125)."""
    host = host.lower()
    if host.startswith("*."):
        return host in sans
    if host in sans:
        return True
    parent = host.split(".", 1)[1] if "." in host else ""
    return bool(parent) and f"*.{parent}" in sans


def _check_hosts(report: CertReport, hosts: tuple[str, ...]) -> None:
    missing = [h for h in hosts if not covers(report.sans, h)]
    if missing:
        report.warnings.append(f"does not cover {', '.join(missing)} (SANs: {', '.join(report.sans) or 'none'})")
