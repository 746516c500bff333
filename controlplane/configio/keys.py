"""Private keys in a configuration file: PKCS#8 PEM encrypted with the user's passphrase.

The file never holds a key in the clear; the passphrase never enters the file.
"""
from __future__ import annotations

from cryptography.hazmat.primitives import serialization

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
