"""Apply a file: every change through the service layer, in one transaction, as one
version with the given note — or nothing at all, with every problem listed.

Each change runs in its own savepoint, so one refused object does not hide the
problems of the others; any problem rolls the whole transaction back. A dry run
makes the same calls (so it finds the same problems) and then rolls back. The
services' publishes are deferred to one publish at the end (``publisher.batch``);
a file that changes nothing publishes nothing.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction

from controlplane.audit.models import AuditEntry
from controlplane.audit.services import Actor, record
from controlplane.publishing import publisher
from controlplane.tenancy.access import Principal

from . import document, export, keys, scope as scopes
from .changes import SectionRunner
from .document import Problem
from .plan import Change, plan

VERSIONED_OBJECTS = ("tenant", "delegation", "pool", "route", "certificate", "accesslist")


@dataclass
class Result:
    changes: list[Change] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    dry_run: bool = False
    version: int | None = None
    guard: str = ""            # what was planned against what (see ``guard``)
    stale: bool = False        # ``expect`` did not match: nothing was tried


    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        counts = {action: sum(c.action == action for c in self.changes) for action in ("create", "update", "delete")}
        return {"dry_run": self.dry_run, "applied": self.ok and not self.dry_run and bool(self.changes),
                "version": self.version, "summary": counts, "changes": [c.as_dict() for c in self.changes],
                "errors": [p.as_dict() for p in self.problems]}


class _Refused(Exception):
    pass


def apply(text: str | bytes, *, principal: Principal, actor: Actor | None = None, tenant: str | None = None,
          note: str = "", dry_run: bool = False, prune: bool = False, passphrase: bytes | None = None,
          expect: str | None = None) -> Result:
    """Apply the file ``text`` (YAML or JSON) in the scope of ``tenant`` (a slug; None:
    the file's own, else the platform for staff).

    ``expect``: the ``guard`` of a dry run shown to the user. When the file, the scope,
    prune, the current version or the planned changes differ from that preview (the
    configuration changed in between), nothing is applied and ``stale`` is set."""
    result = Result(dry_run=dry_run)
    data, result.problems = document.load(text)
    if data is None:
        return result
    in_file, problems = document.scope_of(data)
    result.problems += problems
    try:
        scope = scopes.resolve(principal, tenant, in_file)
    except scopes.ScopeError as exc:
        result.problems.append(Problem("tenant", "", str(exc)))
        return result
    doc, problems = document.read(data, scope.slug)
    result.problems += problems + _open_secrets(doc, passphrase)
    with transaction.atomic():
        publisher.lock()
        _run(doc, scope, result, actor, note, prune, passphrase, (_digest(text), expect))
        if result.problems or dry_run or result.stale:
            transaction.set_rollback(True)
    return result


def _run(doc, scope, result: Result, actor, note, prune, passphrase, check) -> None:
    first_entry = AuditEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0
    result.changes = plan(doc, export.current(scope.tenant), prune=prune, secret_of=export.stored_secret)
    digest, expect = check
    result.guard = guard(digest, scope, prune, result.changes)
    if expect is not None and expect != result.guard:
        result.stale = True
        return
    refused = scopes.refusals(scope, result.changes)
    result.problems += [problem for _, problem in refused]
    runner = SectionRunner(actor, note, passphrase)
    try:
        with publisher.batch(actor, note) as batch:
            skip = {id(change) for change, _ in refused}
            failed = {(e.section, e.key) for entries in doc.sections.values() for e in entries if not e.valid}
            failed |= {(change.section, change.key) for change, _ in refused}
            result.problems += runner.run([c for c in result.changes if id(c) not in skip], refused=failed)
            if result.problems:
                raise _Refused
    except _Refused:
        return
    except ValidationError as exc:  # the whole configuration, refused at the one publish
        result.problems += [Problem("", "", message) for message in _messages(exc)]
        return
    if batch.version is not None:
        result.version = batch.version.number
    if not result.dry_run and result.changes:
        _audit(actor, note, scope, result, first_entry)


def _open_secrets(doc, passphrase: bytes | None) -> list[Problem]:
    """Webhook secrets the file holds sealed (an export with keys), opened with the
    passphrase, so that they are compared and stored as plain values."""
    problems = []
    for entry in doc.sections.get("alert_channels", []):
        if keys.is_sealed(entry.item.get("secret")):
            try:
                entry.item["secret"] = keys.unseal(entry.item["secret"], passphrase)
            except keys.KeyProblem as exc:
                problems.append(Problem(f"{entry.path}.secret", entry.label, str(exc)))
                entry.valid = False
    return problems


def _digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def guard(digest: str, scope, prune: bool, changes: list[Change]) -> str:
    """What a preview showed: the file's sha256, the scope, prune, the current version
    number and the planned changes (before and after values). Run under the publish
    lock, so an apply that matches it makes exactly the previewed changes."""
    current = publisher.current_version()
    seen = {"document": digest, "scope": scope.label, "prune": prune,
            "version": current.number if current else 0, "changes": [c.as_dict() for c in changes]}
    return hashlib.sha256(json.dumps(seen, sort_keys=True, default=str).encode()).hexdigest()


def _messages(exc: ValidationError) -> list[str]:
    if not hasattr(exc, "error_dict"):
        return exc.messages
    return [message if field == NON_FIELD_ERRORS else f"{field}: {message}"
            for field, messages in exc.message_dict.items() for message in messages]


def _audit(actor, note: str, scope, result: Result, first_entry: int) -> None:
    """Link the entries the services wrote to the one version, and record the apply."""
    if result.version is not None:
        AuditEntry.objects.filter(id__gt=first_entry, config_version__isnull=True,
                                  object_type__in=VERSIONED_OBJECTS).update(config_version=result.version)
    summary = result.as_dict()["summary"]
    record(actor, "apply", None, after={"scope": scope.label, **summary}, note=note, tenant=scope.tenant,
           config_version=result.version)
