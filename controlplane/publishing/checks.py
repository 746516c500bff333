"""Is the stored configuration valid, exactly as a node would judge it?

The snapshot compiled from the database goes through the gate (the node's own build,
private keys filled in); then every object is checked again against the business
rules (delegations, upstream policy with fresh DNS answers, quotas, certificates).
Each problem is one line naming the object it belongs to. ``manage.py checkconfig``,
the diagnostics and rollbacks (``restore``) all check with these functions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from django.core.exceptions import ValidationError

from controlplane.crypto import DecryptionError
from controlplane.proxy import errorpages, validation
from controlplane.proxy.models import AccessList, ErrorPage, Pool, Route
from controlplane.tenancy.models import Delegation
from dataplane import schema

from . import compiler, gate
from .models import ConfigVersion

OBJECT_PATH = re.compile(r"(routes|pools|certificates|access_lists)\[(\d+)\]")


@dataclass
class Report:
    """The outcome of a check: the problems, and how the checked config compares to the
    latest published version."""
    snapshot: dict
    problems: list[str]
    sha256: str
    latest: ConfigVersion | None

    @property
    def published(self) -> bool:
        return bool(self.latest and self.latest.sha256 == self.sha256)

    def as_dict(self) -> dict:
        return {"ok": not self.problems, "problems": self.problems, "sha256": self.sha256,
                "published": self.published, "current_version": self.latest.number if self.latest else None}


def check(schema_only: bool = False) -> Report:
    """Check the stored configuration; ``schema_only`` skips the business rules (and
    with them every DNS lookup)."""
    snapshot = compiler.compile_snapshot()
    problems = schema_problems(snapshot)
    if not schema_only:
        problems += business_problems()
    latest = ConfigVersion.objects.order_by("-number").only("number", "sha256").first()
    return Report(snapshot, problems, schema.snapshot_hash(snapshot), latest)


def describe(snapshot: dict, path: str) -> str:
    """``routes[2].hosts[0]`` → ``route shop/api (id 7)``."""
    m = OBJECT_PATH.match(path)
    if not m:
        return "snapshot"
    item = (snapshot.get(m.group(1)) or [])[int(m.group(2))]
    return f"{gate.KINDS_BY_KEY[m.group(1)]} {gate.label(item)} (id {item.get('id')})"


def schema_problems(snapshot: dict) -> list[str]:
    """What the gate refuses in ``snapshot``."""
    try:
        errors = gate.snapshot_errors(snapshot)
    except DecryptionError as exc:
        return [f"certificates: a private key {exc}"]
    return [f"{describe(snapshot, e.path)}: {e.path}: {e.message}" for e in errors]


def business_problems() -> list[str]:
    """Every route, pool and delegation checked against the business rules."""
    problems = []
    for route in Route.objects.select_related("tenant").order_by("id"):
        problems += route_problems(f"route {label(route)}", route)
    for pool in Pool.objects.select_related("tenant").order_by("id"):
        problems += pool_problems(f"pool {label(pool)}", pool)
    for acl in AccessList.objects.select_related("tenant").order_by("id"):
        problems += problems_of(f"access list {label(acl)}", validation.validate_access_list, acl)
    for page in ErrorPage.objects.order_by("status"):
        problems += problems_of(f"platform error page {page.status}", errorpages.validate_error_page,
                                page.status, page.body)
    for d in Delegation.objects.select_related("tenant").order_by("id"):
        problems += problems_of(f"delegation {d.suffix} (tenant {d.tenant.slug})",
                                validation.validate_delegation, d.tenant, d.suffix, exclude_id=d.pk)
    return problems


def route_problems(name: str, route: Route) -> list[str]:
    return problems_of(name, validation.validate_route, route)


def pool_problems(name: str, pool: Pool) -> list[str]:
    """The pool checked with its stored targets."""
    targets = list(pool.targets.order_by("id").values("id", "host", "port", "weight", "state"))
    return problems_of(name, validation.validate_pool, pool, targets)


def label(obj) -> str:
    """``shop/api (id 7)``: a route's or pool's name with its owner and id."""
    owner = f"{obj.tenant.slug}/" if obj.tenant_id else ""
    return f"{owner}{obj.name} (id {obj.pk})"


def problems_of(name: str, check, *args, **kwargs) -> list[str]:
    """The messages of the ValidationError ``check(*args, **kwargs)`` raises, each as
    ``<name>: <field>: <message>``."""
    try:
        check(*args, **kwargs)
    except ValidationError as exc:
        return [f"{name}: {field}: {m}" for field, msgs in exc.message_dict.items() for m in msgs]
    return []
