"""The difference between a file and what is stored: objects to create, to change
(field by field) and, with prune, to delete.

Only the sections the file has are compared; with prune, a stored object of such a
section that the file does not name is deleted (an object the file names but gets
wrong is never one of them). Write-only values (webhook secrets, private keys) are
compared without being shown; certificate details parsed from the PEM are not
compared at all.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .document import CERTIFICATE_DETAILS, NOUNS, SECRET_FIELDS, SECTIONS, Document, Entry, key, label

HIDDEN = "(hidden)"
CREATE, UPDATE, DELETE = "create", "update", "delete"


@dataclass
class Change:
    section: str
    action: str
    label: str
    path: str                  # where the object is in the file ("" for a deletion)
    fields: list[dict]         # [{"field", "before", "after"}] of an update
    item: dict | None          # as the file wants it (None for a deletion)
    before: dict | None        # as stored (None for a creation)

    @property
    def owner(self) -> str | None:
        """The tenant slug the object belongs to (a tenant: itself); None: the platform."""
        data = self.item or self.before
        return data["slug"] if self.section == "tenants" else data["tenant"]

    @property
    def key(self):
        return key(self.section, self.item or self.before)

    def field(self, name: str) -> dict | None:
        return next((f for f in self.fields if f["field"] == name), None)

    def as_dict(self) -> dict:
        return {"action": self.action, "kind": NOUNS[self.section], "object": self.label, "path": self.path,
                "fields": self.fields}

    def __str__(self) -> str:
        sign = {CREATE: "+", UPDATE: "~", DELETE: "-"}[self.action]
        return f"{sign} {self.label}"


def plan(doc: Document, stored: dict[str, dict], *, prune: bool = False,
         secret_of: Callable[[str, object], str | None] = lambda section, key: None) -> list[Change]:
    """Every change, in file order per section (deletions in stored order)."""
    changes = []
    for section in SECTIONS:
        entries = doc.sections.get(section)
        if entries is None:
            continue
        current = stored.get(section, {})
        for entry in entries:
            if entry.valid:
                changes.extend(_compare(entry, current.get(entry.key), secret_of))
        if prune:
            named = {entry.key for entry in entries}
            changes.extend(Change(section, DELETE, label(section, item), "", [], None, item)
                           for item_key, item in current.items() if item_key not in named)
    return changes


def _compare(entry: Entry, before: dict | None, secret_of) -> list[Change]:
    if before is None:
        return [Change(entry.section, CREATE, entry.label, entry.path, [], entry.item, None)]
    fields = field_changes(before, entry.item)
    if entry.item.get("secret") is not None and entry.item["secret"] != secret_of(entry.section, entry.key):
        fields.append({"field": "secret", "before": HIDDEN, "after": HIDDEN})
    if not fields:
        return []
    return [Change(entry.section, UPDATE, entry.label, entry.path, fields, entry.item, before)]


WHOLE_MAPPINGS = ("request_headers", "response_headers")  # compared whole


def field_changes(before: dict, after: dict) -> list[dict]:
    """Field-level differences; a mapping on both sides (``quotas``, ``health_check``) by
    sub-field, anything else (a policy that is null or an object, say) as one value."""
    changes = []
    for name, value in after.items():
        if name not in before or name in CERTIFICATE_DETAILS or name in SECRET_FIELDS:
            continue
        old = before[name]
        if isinstance(old, dict) and isinstance(value, dict) and name not in WHOLE_MAPPINGS:
            changes.extend({"field": f"{name}.{sub}", "before": old[sub], "after": sub_value}
                           for sub, sub_value in value.items() if sub in old and old[sub] != sub_value)
        elif old != value:
            changes.append({"field": name, "before": old, "after": value})
    return changes

