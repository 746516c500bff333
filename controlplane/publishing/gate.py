"""The one gate of what nodes run: refuse a snapshot a node would refuse.

The node's own build (``dataplane.applier.check_snapshot``) runs on the snapshot with
its private keys filled in (``compiler.materialize``), as a push carries it. Object
validation runs it on a one-object snapshot; publishing on the whole config.
"""
from __future__ import annotations

import re

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from controlplane import crypto
from dataplane import applier, schema

from . import compiler

# Snapshot sub-objects of a pool whose fields are prefixed model fields
# (``tls.ca_pem`` is ``tls_ca_pem``), except the thresholds, which are not.
POOL_PREFIXES = {"tls": "tls_", "health_check": "health_check_"}
POOL_UNPREFIXED = ("healthy_threshold", "unhealthy_threshold")

KINDS = (("routes", "route"), ("pools", "pool"), ("certificates", "certificate"),
         ("access_lists", "access list"))
KINDS_BY_KEY = dict(KINDS)
SNAPSHOT_PATH = re.compile(r"(routes|pools|certificates|access_lists)\[(\d+)\]\.?([a-z_]*)\.?(.*)")


def snapshot_errors(snapshot: dict) -> list[schema.SchemaError]:
    """What a node would refuse in ``snapshot`` (schema, then the node's build); a
    stored private key that cannot be decrypted raises ``crypto.DecryptionError``."""
    try:
        applier.check_snapshot(compiler.materialize(snapshot))
    except schema.SnapshotInvalid as exc:
        return exc.errors
    return []


def check_snapshot(snapshot: dict) -> None:
    """Raise ValidationError when a node would refuse ``snapshot``: each problem under the
    model field its snapshot path names, with the object it belongs to."""
    try:
        errors = snapshot_errors(snapshot)
    except crypto.DecryptionError as exc:
        raise ValidationError({"private_key_pem": [f"a stored private key {exc}"]}) from None
    by_field: dict[str, list[str]] = {}
    for error in errors:
        field, message = _placed(snapshot, error)
        by_field.setdefault(field, []).append(message)
    if by_field:
        raise ValidationError(by_field)


def label(item: dict) -> str:
    """A snapshot object's name as people know it: ``<tenant>/<name>``, or the bare name."""
    return f"{item['tenant']}/{item.get('name')}" if item.get("tenant") else str(item.get("name"))


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
    return field or NON_FIELD_ERRORS, f"{KINDS_BY_KEY[key]} {label(item)}: {detail}"
