"""`python manage.py checkconfig` — validate the stored config exactly as a node would.

Compiles the database into a snapshot, adds the private keys as a push would, and runs
the node's own apply code (``dataplane.applier.check_snapshot``) on it; then re-checks
every object against the business rules (delegations, upstream policy with fresh DNS
answers, quotas, certificates). Prints every problem with the object it belongs to;
exits 1 if any. The checks themselves are ``controlplane.publishing.checks``.
"""
from django.core.management.base import BaseCommand, CommandError

from controlplane.publishing import checks
from controlplane.publishing.gate import KINDS


class Command(BaseCommand):
    help = "Validate the stored configuration as a data-plane node would; exit 1 on any problem."

    def add_arguments(self, parser):
        parser.add_argument("--schema-only", action="store_true",
                            help="only the node's schema checks (no DNS lookups, no business rules)")

    def handle(self, *args, schema_only=False, **opts):
        report = checks.check(schema_only=schema_only)
        self.report_version(report)
        for problem in report.problems:
            self.stdout.write(f"ERROR {problem}")
        if report.problems:
            raise CommandError(f"{len(report.problems)} problem(s) found")
        # sections a snapshot may leave out (access_lists) are named only when present
        counts = ", ".join(f"{len(report.snapshot.get(key) or [])} {key.replace('_', ' ')}" for key, _ in KINDS
                           if key in report.snapshot)
        self.stdout.write(self.style.SUCCESS(f"OK: the stored configuration is valid ({counts})"))

    def report_version(self, report: checks.Report) -> None:
        digest, latest = report.sha256, report.latest
        if latest is None:
            self.stdout.write(f"stored config sha256 {digest}; no version published yet")
        elif report.published:
            self.stdout.write(f"stored config sha256 {digest} = version {latest.number} (published)")
        else:
            self.stdout.write(f"stored config sha256 {digest} differs from version {latest.number} "
                              f"({latest.sha256[:12]}): unpublished changes")
