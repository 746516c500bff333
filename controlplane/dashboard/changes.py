"""What a change would do, before it is made; diffs seen through a tenant's eyes.

``preview(action)`` runs the very service call the dashboard is about to make
inside a transaction that is always rolled back, compiles the snapshot the nodes
would get, and compares it with the current version the way ``publisher.diff``
does. Nothing is stored, published or audited; hints to nodes are sent only on
commit, so none leaves either.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction

from dataplane import schema

from controlplane.proxy import services
from controlplane.publishing import compiler, publisher
from controlplane.publishing.models import ConfigVersion

from .sequences import ids_given_back


class _RolledBack(Exception):
    def __init__(self, snapshot, before, after):
        super().__init__("preview")
        self.snapshot, self.before, self.after = snapshot, before, after


@dataclass
class Preview:
    changes: list[dict]              # publisher.diff entries (config the nodes run)
    digest: str                      # sha256 of the would-be snapshot
    current_number: int | None
    object_fields: list[dict] = field(default_factory=list)  # field-level change of the object itself

    @property
    def empty(self) -> bool:
        return not self.changes


def preview(action, before=None) -> Preview:
    """``action()`` performs the change (a service call) and returns the changed object
    (or None for a delete). ``ValidationError`` propagates, with nothing stored."""
    try:
        with transaction.atomic():
            with ids_given_back():
                obj = action()
                after = services.serialize(obj) if obj is not None else None
                snapshot = compiler.compile_snapshot()
            raise _RolledBack(snapshot, before, after)
    except _RolledBack as done:
        snapshot, after = done.snapshot, done.after
    current = publisher.current_version()
    old = ConfigVersion(snapshot=current.snapshot if current else schema.empty_snapshot())
    new = ConfigVersion(snapshot=snapshot)
    return Preview(changes=publisher.diff(old, new), digest=schema.snapshot_hash(snapshot),
                   current_number=current.number if current else None,
                   object_fields=object_diff(before, after))


def object_diff(before: dict | None, after: dict | None) -> list[dict]:
    before, after = before or {}, after or {}
    skip = {"id"}
    return [{"field": k, "before": before.get(k), "after": after.get(k)}
            for k in sorted(set(before) | set(after)) if k not in skip and before.get(k) != after.get(k)]


def tenant_view(version: ConfigVersion | None, principal) -> dict:
    """The part of ``version``'s snapshot that ``principal`` may see (everything for
    staff). Snapshots name tenants by slug, so a version made before one of the
    principal's tenants existed shows nothing of that tenant: whatever carried its
    slug then belonged to a deleted tenant that had the same slug."""
    snapshot = version.snapshot if version is not None else schema.empty_snapshot()
    if principal.staff:
        return snapshot
    made = version.created if version is not None else None
    slugs = {slug for slug, created in principal.tenants().values_list("slug", "created")
             if made is None or made >= created}
    return {**snapshot, **{key: [item for item in snapshot.get(key) or [] if item.get("tenant") in slugs]
                           for key in ("routes", "pools", "certificates", "access_lists")}}


def scoped_diff(a: ConfigVersion | None, b: ConfigVersion, principal) -> list[dict]:
    old = ConfigVersion(snapshot=tenant_view(a, principal))
    new = ConfigVersion(snapshot=tenant_view(b, principal))
    return publisher.diff(old, new)


def filter_changes(changes: list[dict], principal) -> list[dict]:
    """Diff entries of objects ``principal`` may see (labels start with the tenant slug)."""
    if principal.staff:
        return changes
    slugs = set(principal.tenants().values_list("slug", flat=True))
    return [c for c in changes if c["name"].split("/", 1)[0] in slugs and "/" in c["name"]]


def version_summaries(versions, principal, max_fields: int = 6) -> dict[int, list[dict]]:
    """What each of ``versions`` changed against the version before it, as ``principal``
    may see it: {number: [{kind, name, action, fields (names), more}]}. Loads only the
    snapshots of these versions and of their predecessors."""
    numbers = {v.number for v in versions}
    wanted = numbers | {n - 1 for n in numbers if n > 1}
    snapshots = {v.number: v for v in ConfigVersion.objects.filter(number__in=wanted)}
    out = {}
    for number in sorted(numbers):
        version = snapshots.get(number)
        if version is None:
            continue
        changes = scoped_diff(snapshots.get(number - 1), version, principal)
        out[number] = [{"kind": c["kind"], "name": c["name"], "action": c["action"],
                        "fields": [f["field"] for f in c["fields"]][:max_fields] if c["action"] == "changed" else [],
                        "more": max(0, len(c["fields"]) - max_fields) if c["action"] == "changed" else 0}
                       for c in changes]
    return out
