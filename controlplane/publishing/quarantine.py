"""Quarantine: what a node still rejects must not hold back anyone else.

The gate keeps snapshots a node would refuse from becoming versions, but a node of
another software version (version skew) may still NACK one. Its errors name paths
of that version's snapshot (``routes[3].response_headers.set[0].value``,
``pools[1].tls.ca_pem``, ``certificates[0].certificate_pem``); each names one
object by kind and index, that is by id. ``quarantine_rejected`` records those
objects as quarantined, publishes the config without them at once, audits it and
alerts each owner (and the platform). The compiler leaves a quarantined object out
of every version while it stays as it was rejected: its ``updated`` is compared,
so saving the object again (or deleting it) lifts the quarantine.

What else has to go so that the rest is valid is decided by the compiler from the
ids left out: routes of a quarantined pool, routes naming a quarantined certificate,
and pools and certificates no remaining route uses.
"""
from __future__ import annotations

import logging
import re

from django.db import transaction

from controlplane.alerts.hooks import object_quarantined
from controlplane.audit.services import Actor, record

from . import publisher
from .models import ConfigVersion, Node, Quarantine
from .quarantined import MODELS, Key, in_force, keeping_out  # noqa: F401 - what the API and the templates import from here

log = logging.getLogger("switchyard.quarantine")

ERROR_PATH = re.compile(r"(routes|pools|certificates|access_lists)\[(\d+)\]")
KIND_OF_LIST = {"routes": Quarantine.ROUTE, "pools": Quarantine.POOL, "certificates": Quarantine.CERTIFICATE,
                "access_lists": Quarantine.ACCESS_LIST}


def named_objects(snapshot: dict, errors: list[dict]) -> dict[Key, list[dict]]:
    """The objects of ``snapshot`` that ``errors`` name, each with its errors. An error
    whose path names no object (``schema``, ``snapshot``, an index out of range) is
    in none."""
    named: dict[Key, list[dict]] = {}
    for error in errors:
        match = ERROR_PATH.match(error.get("path") or "")
        if match is None:
            continue
        items = snapshot.get(match[1]) or []
        index = int(match[2])
        item = items[index] if index < len(items) else None
        if isinstance(item, dict) and isinstance(item.get("id"), int):
            named.setdefault((KIND_OF_LIST[match[1]], item["id"]), []).append(error)
    return named


def quarantine_rejected(node: Node, number: int, errors: list[dict]) -> bool:
    """Quarantine what ``node``'s NACK of version ``number`` names, then publish the rest.

    Objects already quarantined for that version (another node rejected it first),
    deleted, or changed since that version are left alone. Returns True when every
    error names an object quarantined for that version: the owners were alerted, so
    the NACK needs no alert of its own.
    """
    with transaction.atomic():
        publisher.lock()
        rejected = ConfigVersion.objects.filter(number=number).first()
        if rejected is None:
            return False
        named = named_objects(rejected.snapshot, errors)
        done = set(Quarantine.objects.filter(version=number).values_list("kind", "object_id"))
        new = [q for key, object_errors in named.items() if key not in done
               for q in [_quarantine(node, rejected, key, object_errors)] if q is not None]
        if new:
            _publish_without(new)
        done |= {(q.kind, q.object_id) for q in new}
        return sum(map(len, named.values())) == len(errors) and done >= set(named)


def _quarantine(node: Node, rejected: ConfigVersion, key: Key, errors: list[dict]) -> Quarantine | None:
    kind, object_id = key
    obj = MODELS[kind].objects.filter(pk=object_id).first()
    if obj is None or obj.updated > rejected.created:
        return None  # deleted or saved since: what the node rejected is gone already
    return Quarantine.objects.create(
        kind=kind, object_id=object_id, object_name=str(obj.name)[:200], object_updated=obj.updated,
        tenant_id=obj.tenant_id, version=rejected.number, node=node, node_name=node.name, errors=errors)


def _publish_without(quarantines: list[Quarantine]) -> None:
    first = quarantines[0]
    names = ", ".join(f"{q.kind} {q.object_name}" for q in quarantines)
    version = publisher.publish(Actor.system(), f"quarantine: node {first.node_name} rejected {names} "
                                                f"in version {first.version}")
    left_out_of = version.number if version else None
    for q in quarantines:
        obj = MODELS[q.kind].objects.get(pk=q.object_id)
        record(Actor.system(), "quarantine", obj, after={
            "rejected_version": q.version, "node": q.node_name, "errors": q.errors, "left_out_of": left_out_of,
        }, note=f"node {q.node_name} rejected it: {q.error}", config_version=left_out_of)
        object_quarantined(q, left_out_of)
    log.warning("quarantine: node %s rejected %s in v%s; published v%s without", first.node_name, names,
                first.version, left_out_of)
