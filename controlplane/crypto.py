"""Encryption at rest for private keys and webhook secrets.

Fernet with a key derived (HKDF-SHA256) from ``settings.SWITCHYARD_ENCRYPTION_KEY``.
Several comma-separated keys rotate: the first encrypts, all decrypt. When the
setting is empty (embedded mode) a random key is created once in
``<VAR_DIR>/encryption_key`` with mode 0600.
"""
from __future__ import annotations

import base64
import functools
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

KEY_FILE_NAME = "encryption_key"
HKDF_INFO = b"switchyard encryption at rest v1"


class DecryptionError(ValueError):
    """The ciphertext was made with another key or was tampered with."""


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode("ascii")


def decrypt(ciphertext: str) -> str:
    try:
        return _fernet().decrypt(ciphertext.encode("ascii")).decode()
    except (InvalidToken, UnicodeError) as exc:
        raise DecryptionError("cannot decrypt: was SWITCHYARD_ENCRYPTION_KEY changed?") from exc


def _fernet() -> MultiFernet:
    secret = settings.SWITCHYARD_ENCRYPTION_KEY or ""
    if secret:
        return _from_secrets(tuple(s.strip() for s in secret.split(",") if s.strip()))
    return _from_key_file(str(Path(settings.VAR_DIR) / KEY_FILE_NAME))


@functools.lru_cache(maxsize=8)
def _from_secrets(secrets: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(derive_key(s)) for s in secrets])


def derive_key(secret: str) -> bytes:
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(secret.encode())
    return base64.urlsafe_b64encode(raw)


@functools.lru_cache(maxsize=8)
def _from_key_file(path: str) -> MultiFernet:
    return MultiFernet([Fernet(_read_or_create_key(Path(path)))])


def _read_or_create_key(path: Path) -> bytes:
    """Create the key file once, atomically (temp file + link), readable by the owner only."""
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(Fernet.generate_key() + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # fails when another process won the race: use its key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes().strip()
