"""`python manage.py checkconfig` — validate the stored config exactly as a node would.

Compiles the database into a snapshot, adds the private keys as a push would, and
runs the node's own apply code (``dataplane.applier.check_snapshot``) on it; then re-checks every object against
the business rules (delegations, upstream policy with fresh DNS answers, quotas,
certificates). Prints every problem with the object it belongs to; exits 1 if any.
"""
import re

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from dataplane import applier, schema

from controlplane.certs.crypto import DecryptionError
from controlplane.proxy import validation
from controlplane.proxy.models import Pool, Route
from controlplane.publishing import compiler, publisher
from controlplane.tenancy.models import Delegation

KINDS = {"routes": "route", "pools": "pool", "certificates": "certificate"}


def describe(snapshot: dict, path: str) -> str:
    """``routes[2].hosts[0]`` → ``route shop/api (id 7)``."""
    m = re.match(r"(routes|pools|certificates)\[(\d+)\]", path)
    if not m:
        return "snapshot"
    item = (snapshot.get(m.group(1)) or [])[int(m.group(2))]
    owner = f"{item['tenant']}/" if item.get("tenant") else ""
    return f"{KINDS[m.group(1)]} {owner}{item.get('name')} (id {item.get('id')})"


class Command(BaseCommand):
    help = "Validate the stored configuration as a data-plane node would; exit 1 on any problem."

    def add_arguments(self, parser):
        parser.add_argument("--schema-only", action="store_true",
                            help="only the node's schema checks (no DNS lookups, no business rules)")

    def handle(self, *args, schema_only=False, **opts):
        snapshot = compiler.compile_snapshot()
        problems = self.schema_problems(snapshot)
        if not schema_only:
            problems += self.business_problems()
        self.report_version(snapshot)
        for problem in problems:
            self.stdout.write(f"ERROR {problem}")
        if problems:
            raise CommandError(f"{len(problems)} problem(s) found")
        counts = ", ".join(f"{len(snapshot[k])} {k}" for k in KINDS)
        self.stdout.write(self.style.SUCCESS(f"OK: the stored configuration is valid ({counts})"))

    def schema_problems(self, snapshot: dict) -> list[str]:
        try:
            wire = compiler.materialize(snapshot)
        except DecryptionError as exc:
            return [f"certificates: a private key {exc}"]
        try:
            applier.check_snapshot(wire)
        except schema.SnapshotInvalid as exc:
            return [f"{describe(snapshot, e.path)}: {e.path}: {e.message}" for e in exc.errors]
        return []

    def business_problems(self) -> list[str]:
        problems = []
        for route in Route.objects.select_related("tenant").order_by("id"):
            problems += self.problems_of(f"route {self.label(route)}", validation.validate_route, route)
        for pool in Pool.objects.select_related("tenant").order_by("id"):
            targets = list(pool.targets.order_by("id").values("id", "host", "port", "weight", "state"))
            problems += self.problems_of(f"pool {self.label(pool)}", validation.validate_pool, pool, targets)
        for d in Delegation.objects.select_related("tenant").order_by("id"):
            problems += self.problems_of(f"delegation {d.suffix} (tenant {d.tenant.slug})",
                                   validation.validate_delegation, d.tenant, d.suffix, exclude_id=d.pk)
        return problems

    @staticmethod
    def label(obj) -> str:
        owner = f"{obj.tenant.slug}/" if obj.tenant_id else ""
        return f"{owner}{obj.name} (id {obj.pk})"

    @staticmethod
    def problems_of(label, func, *args, **kwargs) -> list[str]:
        try:
            func(*args, **kwargs)
        except ValidationError as exc:
            return [f"{label}: {field}: {m}" for field, msgs in exc.message_dict.items() for m in msgs]
        return []

    def report_version(self, snapshot: dict) -> None:
        digest = schema.snapshot_hash(snapshot)
        latest = publisher.current_version()
        if latest is None:
            self.stdout.write(f"stored config sha256 {digest}; no version published yet")
        elif latest.sha256 == digest:
            self.stdout.write(f"stored config sha256 {digest} = version {latest.number} (published)")
        else:
            self.stdout.write(f"stored config sha256 {digest} differs from version {latest.number} "
                              f"({latest.sha256[:12]}): unpublished changes")
