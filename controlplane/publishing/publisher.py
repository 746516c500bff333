"""Accepted changes become immutable ConfigVersions; nodes hear about them on commit.

Every config write takes ``lock()`` first (a PostgreSQL transaction-level advisory
lock; SQLite already serialises writers with ``BEGIN IMMEDIATE``), so validation,
compilation and version numbering all see the same committed state and two
concurrent publishes can never both claim number N+1.
"""
from __future__ import annotations

import re

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import connection, transaction

from dataplane import applier, schema

from controlplane.audit.services import Actor, record
from controlplane.certs import crypto
from controlplane.proxy.validation import POOL_PREFIXES, POOL_UNPREFIXED

from . import compiler, notify
from .models import ConfigVersion

ADVISORY_LOCK_KEY = 0x5377_6974_6368  # "Switch"
SNAPSHOT_PATH = re.compile(r"(routes|pools|certificates)\[(\d+)\]\.?([a-z_]*)\.?(.*)")


def lock() -> None:
    """Serialise config writers until the end of the current transaction."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])


def current_version() -> ConfigVersion | None:
    return ConfigVersion.objects.order_by("-number").first()


def check_snapshot(snapshot: dict) -> None:
    """The one gate of what nodes run (SPEC 7): refuse a snapshot a node would refuse.

    The node's own build (``dataplane.applier.check_snapshot``) runs on the snapshot
    with its private keys filled in, as a push carries it; each problem is reported
    under the model field its snapshot path names, with the object it belongs to."""
    try:
        applier.check_snapshot(compiler.materialize(snapshot))
    except crypto.DecryptionError as exc:
        raise ValidationError({"private_key_pem": [f"a stored private key {exc}"]}) from None
    except schema.SnapshotInvalid as exc:
        by_field: dict[str, list[str]] = {}
        for error in exc.errors:
            field, message = _placed(snapshot, error)
            by_field.setdefault(field, []).append(message)
        raise ValidationError(by_field) from None


def _placed(snapshot: dict, error: schema.SchemaError) -> tuple[str, str]:
    """``pools[1].tls.ca_pem`` → (``tls_ca_pem``, ``pool alpha/web: <message>``)."""
    m = SNAPSHOT_PATH.fullmatch(error.path)
    if m is None:
        return NON_FIELD_ERRORS, f"{error.path}: {error.message}"
    key, index, field, rest = m.groups()
    if key == "pools" and field in POOL_PREFIXES and rest:
        name, _, rest = rest.partition(".")
        field = name if name in POOL_UNPREFIXED else POOL_PREFIXES[field] + name
    item = snapshot[key][int(index)]
    detail = f"{rest}: {error.message}" if rest else error.message
    return field or NON_FIELD_ERRORS, f"{KINDS_BY_KEY[key]} {_label(item)}: {detail}"


def publish(actor: Actor | None, note: str = "", *, rolled_back_from: int | None = None) -> ConfigVersion | None:
    """Compile and store a new version when the config changed; None for a no-op."""
    with transaction.atomic():
        lock()
        snapshot = compiler.compile_snapshot()
        check_snapshot(snapshot)
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
    from . import restore

    with transaction.atomic():
        lock()
        target = ConfigVersion.objects.filter(number=number).first()
        if target is None:
            raise ValidationError({"number": [f"there is no version {number}"]})
        before = current_version()
        restore.restore_snapshot(target.snapshot, number)
        version = publish(actor, note or f"rollback to version {number}", rolled_back_from=number)
        record(actor, "rollback", version or target, note=note,
               config_version=version.number if version else None, before={"version": before.number if before else None},
               after={"version": version.number if version else number, "rolled_back_from": number})
        return version


# ------------------------------------------------------------------ diff

KINDS = (("routes", "route"), ("pools", "pool"), ("certificates", "certificate"))
KINDS_BY_KEY = dict(KINDS)


def _flatten(item: dict) -> dict:
    flat = {}
    for key, value in item.items():
        if isinstance(value, dict) and key not in ("request_headers", "response_headers"):
            for sub, sub_value in value.items():
                flat[f"{key}.{sub}"] = sub_value
        else:
            flat[key] = value
    return flat


def _label(item: dict) -> str:
    return f"{item['tenant']}/{item.get('name')}" if item.get("tenant") else str(item.get("name"))


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
    return changes


def _change(kind: str, item_id: int, old: dict | None, new: dict | None) -> list[dict]:
    if old == new:
        return []
    base = {"kind": kind, "id": item_id, "name": _label(new or old)}
    if old is None:
        return [{**base, "action": "added", "fields": _changed_fields({}, new)}]
    if new is None:
        return [{**base, "action": "removed", "fields": _changed_fields(old, {})}]
    return [{**base, "action": "changed", "fields": _changed_fields(old, new)}]
