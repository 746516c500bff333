"""The ACME protocol side of an order, on the ``acme`` and ``josepy`` packages.

``AcmeClient`` speaks to one directory with one account key: it registers the account
(with External Account Binding when configured), places an order for a set of names
(a fresh P-256 key and CSR per order, the configured profile), hands back the HTTP-01
challenges to publish, tells the CA to validate them and returns the issued chain.
Every failure is raised as ``AcmeFailure`` with the CA's own words.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import josepy as jose
import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings

USER_AGENT = "switchyard-acme"
NETWORK_TIMEOUT = 30


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
    host: str
    token: str
    key_authorization: str
    body: messages.ChallengeBody


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

    def new_order(self, names: list[str], key_pem: str) -> messages.OrderResource:
        csr = crypto_util.make_csr(key_pem.encode(), names)
        try:
            return self.acme.new_order(csr, profile=self.config.profile or None)
        except Exception as exc:
            raise AcmeFailure(f"order refused: {describe(exc)}") from exc

    def http01(self, order: messages.OrderResource) -> list[Http01]:
        """The HTTP-01 challenge of each authorization that is not valid yet."""
        found = []
        for authzr in order.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue
            body = next((c for c in authzr.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
            if body is None:
                raise AcmeFailure(f"the CA offers no HTTP-01 challenge for {authzr.body.identifier.value}")
            _response, key_authorization = body.chall.response_and_validation(self.key)
            found.append(Http01(authzr.body.identifier.value, body.chall.encode("token"), key_authorization, body))
        return found

    def validate_and_finish(self, order: messages.OrderResource, pending: list[Http01],
                            timeout_seconds: float) -> str:
        """Tell the CA to validate ``pending``, wait for it and for the certificate; returns
        the issued chain (leaf first) as PEM."""
        deadline = dt.datetime.now() + dt.timedelta(seconds=timeout_seconds)
        try:
            for challenge in pending:
                self.acme.answer_challenge(challenge.body, challenge.body.response(self.key))
            return self.acme.poll_and_finalize(order, deadline).fullchain_pem
        except Exception as exc:
            raise AcmeFailure(describe(exc)) from exc
