"""The ACME protocol side of an order, on the ``acme`` and ``josepy`` packages.

``AcmeClient`` speaks to one directory with one account key: it registers the account
(with External Account Binding when configured), places an order for a set of names
(a fresh P-256 key and CSR per order, a profile, and on a renewal the ARI ``replaces``
of the certificate it replaces), hands back the challenges of the chosen method
(HTTP-01, TLS-ALPN-01 or DNS-01) to publish, tells the CA to validate them and returns
the issued chain.
Every failure is raised as ``AcmeFailure`` with the CA's own words.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import josepy as jose
import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.conf import settings

USER_AGENT = "switchyard-acme"
NETWORK_TIMEOUT = 30
HTTP_01, TLS_ALPN_01, DNS_01 = "http-01", "tls-alpn-01", "dns-01"
METHODS = (HTTP_01, TLS_ALPN_01, DNS_01)
ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # RFC 8737


class AcmeFailure(Exception):
    """An order could not be completed; the message is what the CA (or the network) said."""


@dataclass(frozen=True)
class AcmeSettings:
    directory: str
    email: str = ""
    eab_kid: str = ""
    eab_hmac: str = ""
    profile: str = ""
    ca_bundle: str = ""  # a PEM file trusted for the directory's HTTPS; empty: the system store

    @property
    def verify(self):
        return self.ca_bundle or True


def configured() -> AcmeSettings:
    return AcmeSettings(
        directory=settings.SWITCHYARD_ACME_DIRECTORY, email=settings.SWITCHYARD_ACME_EMAIL,
        eab_kid=settings.SWITCHYARD_ACME_EAB_KID, eab_hmac=settings.SWITCHYARD_ACME_EAB_HMAC,
        profile=settings.SWITCHYARD_ACME_PROFILE, ca_bundle=settings.SWITCHYARD_ACME_CA_BUNDLE)


def new_private_key() -> str:
    """A P-256 private key, PEM (PKCS#8)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@dataclass(frozen=True)
class Http01:
    """A challenge to publish: HTTP-01 (token and key authorization on every node),
    TLS-ALPN-01 (``certificate_pem``/``private_key_pem`` on every node's TLS listener) or
    DNS-01 (``dns_value`` in the TXT record of ``_acme-challenge.<host>``)."""
    host: str
    token: str
    key_authorization: str
    body: messages.ChallengeBody
    method: str = HTTP_01
    certificate_pem: str = ""
    private_key_pem: str = ""

    @property
    def dns_value(self) -> str:
        return jose.b64encode(hashlib.sha256(self.key_authorization.encode()).digest()).decode()


def tls_alpn01_certificate(host: str, key_authorization: str) -> tuple[str, str]:
    """The RFC 8737 validation certificate: self-signed, ``host`` its only name, the critical
    acmeIdentifier extension holding sha256(key authorization); (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.timezone.utc)
    digest = hashlib.sha256(key_authorization.encode()).digest()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER, b"\x04\x20" + digest), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def _typ(chall) -> str:
    """A challenge's type; ``acme`` parses types it does not know (tls-alpn-01) as unrecognized."""
    return chall.typ if isinstance(chall.typ, str) else str(chall.jobj.get("type", ""))


class _NewOrder(messages.NewOrder):
    """newOrder with RFC 9773's ``replaces`` (the ARI certID of the certificate it renews)."""
    replaces: str = jose.field("replaces", omitempty=True)


def describe(exc: BaseException) -> str:
    """One readable line (or a few) for an ACME or network error."""
    if isinstance(exc, errors.ValidationError):
        parts = []
        for authzr in exc.failed_authzrs:
            failed = [c for c in authzr.body.challenges if c.error is not None]
            detail = "; ".join(f"{c.chall.typ}: {c.error.detail or c.error.typ}" for c in failed) or "invalid"
            parts.append(f"{authzr.body.identifier.value}: {detail}")
        return "validation failed: " + " | ".join(parts)
    if isinstance(exc, messages.Error):
        return str(exc.detail or exc.description or exc.typ or exc)
    if isinstance(exc, requests.RequestException):
        return f"cannot reach the ACME server: {exc}"
    return str(exc) or type(exc).__name__


class AcmeClient:
    def __init__(self, config: AcmeSettings, account_key_pem: str, account_uri: str = ""):
        self.config = config
        self.key = jose.JWKEC(key=serialization.load_pem_private_key(account_key_pem.encode(), None))
        account = messages.RegistrationResource(body=messages.Registration(), uri=account_uri) \
            if account_uri else None
        self.net = client.ClientNetwork(self.key, account=account, alg=jose.ES256, verify_ssl=config.verify,
                                        user_agent=USER_AGENT, timeout=NETWORK_TIMEOUT)
        try:
            self.acme = client.ClientV2(client.ClientV2.get_directory(config.directory, self.net), self.net)
        except Exception as exc:
            raise AcmeFailure(f"cannot read the ACME directory {config.directory}: {describe(exc)}") from exc

    @property
    def renewal_info_url(self) -> str:
        """The directory's ``renewalInfo`` URL, or "" when the CA offers no renewal information."""
        try:
            return str(self.acme.directory["renewalInfo"])
        except KeyError:
            return ""

    def register(self) -> str:
        """Create (or find) the account of this key; returns its URL."""
        eab = None
        if self.config.eab_kid and self.config.eab_hmac:
            eab = messages.ExternalAccountBinding.from_data(
                account_public_key=self.key.public_key(), kid=self.config.eab_kid,
                hmac_key=self.config.eab_hmac, directory=self.acme.directory)
        contact = {"email": self.config.email} if self.config.email else {}
        registration = messages.NewRegistration.from_data(
            terms_of_service_agreed=True, external_account_binding=eab, **contact)
        try:
            return self.acme.new_account(registration).uri
        except errors.ConflictError as exc:  # the key already has an account
            self.net.account = messages.RegistrationResource(body=messages.Registration(), uri=exc.location)
            return exc.location
        except Exception as exc:
            raise AcmeFailure(f"account registration refused: {describe(exc)}") from exc

    def new_order(self, names: list[str], key_pem: str, profile: str | None = None,
                  replaces: str = "") -> messages.OrderResource:
        """Place the order; ``profile`` None takes the configured one; ``replaces`` (an ARI
        certID) is sent only when the CA offers renewal information."""
        csr = crypto_util.make_csr(key_pem.encode(), names)
        profile = self.config.profile if profile is None else profile
        try:
            if not replaces or not self.renewal_info_url:
                return self.acme.new_order(csr, profile=profile or None)
            return self._new_order(csr, profile, replaces)
        except Exception as exc:
            raise AcmeFailure(f"order refused: {describe(exc)}") from exc

    def _new_order(self, csr_pem: bytes, profile: str, replaces: str) -> messages.OrderResource:
        """``ClientV2.new_order`` with ``replaces`` in the request."""
        acme = self.acme
        csr = x509.load_pem_x509_csr(csr_pem)
        dns_names, _ips = crypto_util.get_identifiers_from_x509(csr.subject, csr.extensions)
        identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=n) for n in dns_names]
        request = _NewOrder(identifiers=identifiers, profile=profile or "", replaces=replaces)
        response = acme._post(acme.directory["newOrder"], request)
        body = messages.Order.from_json(response.json())
        authorizations = [acme._authzr_from_response(acme._post_as_get(url), uri=url) for url in body.authorizations]
        return messages.OrderResource(body=body, uri=response.headers.get("Location"),
                                      authorizations=authorizations, csr_pem=csr_pem)

    def challenges(self, order: messages.OrderResource, method: str = HTTP_01) -> list[Http01]:
        """The ``method`` challenge of each authorization that is not valid yet."""
        found = []
        for authzr in order.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue
            host = authzr.body.identifier.value
            body = next((c for c in authzr.body.challenges if _typ(c.chall) == method), None)
            if body is None:
                offered = ", ".join(sorted(_typ(c.chall) for c in authzr.body.challenges)) or "none"
                what = f"*.{host}" if authzr.body.wildcard else host
                raise AcmeFailure(f"the CA offers no {method} challenge for {what} (it offers: {offered})")
            token = body.chall.encode("token") if hasattr(body.chall, "token") else str(body.chall.jobj["token"])
            thumbprint = jose.b64encode(self.key.public_key().thumbprint(hash_function=hashes.SHA256)).decode()
            key_authorization = f"{token}.{thumbprint}"
            cert_pem = key_pem = ""
            if method == TLS_ALPN_01:
                cert_pem, key_pem = tls_alpn01_certificate(host, key_authorization)
            found.append(Http01(host, token, key_authorization, body, method, cert_pem, key_pem))
        return found

    def http01(self, order: messages.OrderResource) -> list[Http01]:
        return self.challenges(order, HTTP_01)

    def validate_and_finish(self, order: messages.OrderResource, pending: list[Http01],
                            timeout_seconds: float) -> str:
        """Tell the CA to validate ``pending``, wait for it and for the certificate; returns
        the issued chain (leaf first) as PEM."""
        deadline = dt.datetime.now() + dt.timedelta(seconds=timeout_seconds)
        try:
            for challenge in pending:  # every method's response is the empty object
                self.acme.answer_challenge(challenge.body, challenges.HTTP01Response())
            return self.acme.poll_and_finalize(order, deadline).fullchain_pem
        except Exception as exc:
            raise AcmeFailure(describe(exc)) from exc
