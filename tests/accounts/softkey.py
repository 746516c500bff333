"""A software security key for tests that speak HTTP without a browser: it answers the
control plane's WebAuthn options the way a browser + USB key would (attestation
"none", an ES256 key pair made here), signing with ``cryptography``. The browser tests
use Chrome's virtual authenticator instead."""
from __future__ import annotations

import hashlib
import json
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.cose import ES256
from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import AttestationObject, AttestedCredentialData, AuthenticatorData, CollectedClientData

FLAGS = AuthenticatorData.FLAG


class SoftKey:
    def __init__(self, origin: str = "http://localhost", rp_id: str = "localhost"):
        self.origin, self.rp_id = origin, rp_id
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(32)
        self.counter = 0

    @property
    def id(self) -> str:
        return websafe_encode(self.credential_id)

    def _rp_hash(self, rp_id: str | None) -> bytes:
        return hashlib.sha256((rp_id or self.rp_id).encode()).digest()

    def register(self, options: dict) -> str:
        """The JSON a browser posts for ``navigator.credentials.create(options)``."""
        public_key = options["publicKey"]
        client_data = CollectedClientData.create("webauthn.create", public_key["challenge"], self.origin)
        credential = AttestedCredentialData.create(bytes(16), self.credential_id,
                                                   ES256.from_cryptography_key(self.private.public_key()))
        auth_data = AuthenticatorData.create(self._rp_hash(public_key["rp"].get("id")), FLAGS.UP | FLAGS.AT,
                                             self.counter, credential)
        attestation = AttestationObject.create("none", auth_data, {})
        return json.dumps({"id": self.id, "rawId": self.id, "type": "public-key",
                           "response": {"clientDataJSON": websafe_encode(client_data),
                                        "attestationObject": websafe_encode(attestation)},
                           "clientExtensionResults": {}})

    def assert_(self, options: dict) -> str:
        """The JSON a browser posts for ``navigator.credentials.get(options)`` (this key
        answers whether or not it is in the allowed list, as a stolen or removed key would)."""
        public_key = options["publicKey"]
        self.counter += 1
        client_data = CollectedClientData.create("webauthn.get", public_key["challenge"], self.origin)
        auth_data = AuthenticatorData.create(self._rp_hash(public_key.get("rpId")), FLAGS.UP, self.counter)
        signature = self.private.sign(bytes(auth_data) + client_data.hash, ec.ECDSA(hashes.SHA256()))
        return json.dumps({"id": self.id, "rawId": self.id, "type": "public-key",
                           "response": {"clientDataJSON": websafe_encode(client_data),
                                        "authenticatorData": websafe_encode(auth_data),
                                        "signature": websafe_encode(signature), "userHandle": None},
                           "clientExtensionResults": {}})


def allowed_ids(options: dict) -> set[bytes]:
    return {websafe_decode(c["id"]) for c in options["publicKey"].get("allowCredentials") or []}
