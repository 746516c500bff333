"""Accepted changes become immutable ConfigVersions; nodes hear about them on commit.

Every config write takes ``lock()`` first (a PostgreSQL transaction-level advisory
lock; SQLite already serialises writers with ``BEGIN IMMEDIATE``), so validation,
compilation and version numbering all see the same committed state and two
concurrent publishes can never both claim number N+1. ``batch()`` makes many
changes one version.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import connection, transaction

from controlplane.audit.services import Actor, record
from controlplane.proxy import basic_auth
from dataplane import schema

from . import compiler, gate, notify, restore
from .gate import KINDS, label
from .models import ConfigVersion

ADVISORY_LOCK_KEY = 0x5377_6974_6368  # "Switch"

_batch: contextvars.ContextVar[Batch | None] = contextvars.ContextVar("switchyard_publish_batch", default=None)


def lock() -> None:
    """Serialise config writers until the end of the current transaction."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])


def current_version() -> ConfigVersion | None:
    return ConfigVersion.objects.order_by("-number").first()


@dataclass
class Batch:
    """The publishes deferred by ``batch()``; ``version`` is what its end published."""
    actor: Actor | None
    note: str
    pending: bool = False
    version: ConfigVersion | None = None


@contextlib.contextmanager
def batch(actor: Actor | None, note: str = ""):
    """Many changes, one version: inside the block ``publish`` only notes that the config
    changed (and returns None); the end of the outermost block publishes once, with its
    actor and note. A block that raises publishes nothing. Use it inside the transaction
    that makes the changes."""
    outer = _batch.get()
    if outer is not None:
        yield outer
        return
    current = Batch(actor, note)
    token = _batch.set(current)
    try:
        yield current
    finally:
        _batch.reset(token)
    if current.pending:
        current.version = publish(actor, note)


def publish(actor: Actor | None, note: str = "", *, rolled_back_from: int | None = None) -> ConfigVersion | None:
    """Compile and store a new version when the config changed; None for a no-op (and
    inside ``batch()``, which publishes at its end)."""
    deferred = _batch.get()
    if deferred is not None:
        deferred.pending = True
        return None
    with transaction.atomic():
        lock()
        snapshot = compiler.compile_snapshot()
        gate.check_snapshot(snapshot)
        digest = schema.snapshot_hash(snapshot)
        latest = ConfigVersion.objects.select_for_update().order_by("-number").first()
        if latest is not None and latest.sha256 == digest:
            return None
        version = ConfigVersion.objects.create(
            number=(latest.number if latest else 0) + 1, sha256=digest, snapshot=snapshot,
            author=(actor or Actor.system()).label[:200], note=note or "", rolled_back_from=rolled_back_from)
        notify.config_changed_on_commit()
        return version


def rollback(actor: Actor | None, number: int, note: str = "") -> ConfigVersion | None:
    """Make version ``number`` live again: restore its routes, pools and targets rows,
    then publish them as a new version (``rolled_back_from=number``) and audit it.

    Routes not in that version are disabled (never deleted); pools and targets it
    names are restored to its content (re-created when deleted). Returns None when
    the live config already is that version.
    """
    with transaction.atomic():
        lock()
        target = ConfigVersion.objects.filter(number=number).first()
        if target is None:
            raise ValidationError({"number": [f"there is no version {number}"]})
        before = current_version()
        restore.restore_snapshot(target.snapshot, number)
        version = publish(actor, note or restore_note(target), rolled_back_from=number)
        record(actor, "rollback", version or target, note=note,
               config_version=version.number if version else None,
               before={"version": before.number if before else None},
               after={"version": version.number if version else number, "rolled_back_from": number})
        if version is not None and before is not None:
            _record_restored_objects(actor, diff(before, version), version)
        return version


def restore_note(target: ConfigVersion, reason: str = "") -> str:
    """The note of the version that restores ``target``: "Restore of version N: <its note>",
    then " — <reason>" when one is given (without a note of its own: "...: <reason>")."""
    said = [part.strip() for part in (target.note or "", reason or "") if part and part.strip()]
    return f"Restore of version {target.number}" + (f": {' — '.join(said)}" if said else "")


def _record_restored_objects(actor: Actor | None, changes: list[dict], version: ConfigVersion) -> None:
    """One ``restore`` audit entry per route, pool and certificate the restore changed, so
    that it shows in each object's history."""
    from controlplane.proxy.models import Certificate, Pool, Route

    models = {"route": Route, "pool": Pool, "certificate": Certificate}
    for change in changes:
        obj = models[change["kind"]].objects.filter(pk=change["id"]).select_related("tenant").first()
        if obj is None:
            continue
        fields = change["fields"]
        record(actor, "restore", obj, note=version.note, config_version=version.number,
               before={f["field"]: f["before"] for f in fields}, after={f["field"]: f["after"] for f in fields})


# ------------------------------------------------------------------ diff

def _flatten(item: dict) -> dict:
    flat = {}
    for key, value in item.items():
        if isinstance(value, dict) and key not in ("request_headers", "response_headers"):
            for sub, sub_value in value.items():
                flat[f"{key}.{sub}"] = (basic_auth.audit_view(sub_value) if sub == "users"  # a route's
                                        else sub_value)                                  # basic_auth
        elif key == "users" and isinstance(value, list):  # basic auth: hash fingerprints, not hashes
            flat[key] = basic_auth.audit_view(value)
        else:
            flat[key] = value
    return flat


def _changed_fields(before: dict, after: dict) -> list[dict]:
    a, b = _flatten(before), _flatten(after)
    return [{"field": key, "before": a.get(key), "after": b.get(key)}
            for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


def diff(a: ConfigVersion, b: ConfigVersion) -> list[dict]:
    """What changed from version ``a`` to version ``b``: one entry per added, removed
    or changed route, pool and certificate, with field-level before/after."""
    changes = []
    for key, kind in KINDS:
        old = {item["id"]: item for item in a.snapshot.get(key) or []}
        new = {item["id"]: item for item in b.snapshot.get(key) or []}
        for item_id in sorted(set(old) | set(new)):
            changes.extend(_change(kind, item_id, old.get(item_id), new.get(item_id)))
    # the platform default error pages: one top-level object, by status (platform only)
    changes.extend(_change("error pages", 0, a.snapshot.get("error_pages"), b.snapshot.get("error_pages"),
                           "platform defaults"))
    return changes


def _change(kind: str, item_id: int, old: dict | None, new: dict | None, name: str = "") -> list[dict]:
    if old == new:
        return []
    base = {"kind": kind, "id": item_id, "name": name or label(new or old)}
    if old is None:
        return [{**base, "action": "added", "fields": _changed_fields({}, new)}]
    if new is None:
        return [{**base, "action": "removed", "fields": _changed_fields(old, {})}]
    return [{**base, "action": "changed", "fields": _changed_fields(old, new)}]
