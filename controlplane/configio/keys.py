"""Private keys in a configuration file: PKCS#8 PEM encrypted with the user's passphrase;
webhook secrets sealed with the same passphrase (``sealed:`` + salt + Fernet token, the
key derived with scrypt).

The file never holds a key or a secret in the clear; the passphrase never enters the file.
"""
from __future__ import annotations

import base64
import binascii
import os

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MIN_PASSPHRASE = 8


class KeyProblem(ValueError):
    """A key that cannot be read or decrypted (wrong passphrase, not a key)."""


def check_passphrase(passphrase: bytes | None) -> bytes:
    if not passphrase or len(passphrase) < MIN_PASSPHRASE:
        raise KeyProblem(f"a passphrase of at least {MIN_PASSPHRASE} characters is needed to export private keys")
    return passphrase


def encrypt(private_key_pem: str, passphrase: bytes) -> str:
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(check_passphrase(passphrase))).decode("ascii")


def decrypt(encrypted_pem: str, passphrase: bytes | None) -> str:
    """The key as an unencrypted PKCS#8 PEM."""
    if not passphrase:
        raise KeyProblem("the file holds an encrypted private key: give the passphrase it was exported with")
    try:
        key = serialization.load_pem_private_key(encrypted_pem.encode(), password=passphrase)
    except (ValueError, TypeError, UnicodeError):
        raise KeyProblem("cannot decrypt the private key: wrong passphrase, or not an encrypted PEM key") from None
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


SEALED = "sealed:"


def _fernet(passphrase: bytes, salt: bytes) -> Fernet:
    key = Scrypt(salt=salt, length=32, n=2 ** 14, r=8, p=1).derive(passphrase)
    return Fernet(base64.urlsafe_b64encode(key))


def seal(value: str, passphrase: bytes) -> str:
    """``value`` (a webhook secret) encrypted with ``passphrase``, as one line of text."""
    salt = os.urandom(16)
    token = _fernet(check_passphrase(passphrase), salt).encrypt(value.encode())
    return f"{SEALED}{base64.urlsafe_b64encode(salt).decode()}:{token.decode()}"


def is_sealed(value) -> bool:
    return isinstance(value, str) and value.startswith(SEALED)


def unseal(value: str, passphrase: bytes | None) -> str:
    if not passphrase:
        raise KeyProblem("the file holds a sealed secret: give the passphrase it was exported with")
    try:
        salt, token = value[len(SEALED):].split(":", 1)
        return _fernet(passphrase, base64.urlsafe_b64decode(salt)).decrypt(token.encode()).decode()
    except (ValueError, InvalidToken, binascii.Error, UnicodeError):
        raise KeyProblem("cannot open the sealed secret: wrong passphrase, or not a sealed value") from None
