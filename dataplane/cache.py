"""The node's last-known-good snapshot on disk.

Written after every successful apply (temp file, fsync, rename, fsync of the
directory), read once at start so the node serves at once, before it reaches the
control plane. The file holds private keys: mode 0600, directory 0700 when created.
Pure standard library; blocking (call ``save`` through ``asyncio.to_thread``).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from dataplane import schema

log = logging.getLogger("switchyard.cache")

CACHE_FILE = "snapshot.json"
FORMAT = 1


def cache_path(cache_dir: str | os.PathLike) -> Path:
    return Path(cache_dir) / CACHE_FILE


def save(cache_dir: str | os.PathLike, version: int, digest: str, snapshot: dict) -> Path:
    """Atomically replace the cached snapshot. Returns the file's path."""
    directory = Path(cache_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = json.dumps({"format": FORMAT, "version": version, "hash": digest, "snapshot": snapshot},
                      separators=(",", ":"), ensure_ascii=False).encode()
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{CACHE_FILE}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        target = directory / CACHE_FILE
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    return target


def load(cache_dir: str | os.PathLike) -> tuple[int, str, dict] | None:
    """(version, hash, snapshot) of the cached snapshot; None when missing or corrupt."""
    path = cache_path(cache_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("cache: cannot read %s: %s", path, exc)
        return None
    try:
        data = json.loads(raw)
        version, digest, snapshot = data["version"], data["hash"], data["snapshot"]
        if isinstance(version, bool) or not isinstance(version, int) or not isinstance(digest, str) \
                or not isinstance(snapshot, dict):
            raise ValueError("unexpected field types")
        if schema.snapshot_hash(snapshot) != digest:
            raise ValueError("hash does not match the snapshot")
    except (ValueError, KeyError, TypeError) as exc:
        log.error("cache: ignoring corrupt %s: %s", path, exc)
        return None
    return version, digest, snapshot


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
