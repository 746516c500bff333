"""`python manage.py config export|apply|backup|restore` — configuration as code.

    config export [--tenant SLUG] [--format yaml|json] [--include-keys --passphrase-file F] [--output F]
    config apply FILE [--dry-run] [--prune] [--tenant SLUG] [--note TEXT] [--passphrase-file F]
    config backup FILE [--with-passwords]
    config restore FILE

The operator runs these as platform staff. ``apply`` prints the diff and every
problem, and exits 1 when there is any (then nothing was changed); FILE ``-`` is
standard input.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from controlplane.audit.services import Actor
from controlplane.configio import apply as applying, backup, document, export, keys
from controlplane.tenancy.access import Principal
from controlplane.tenancy.models import Tenant

OPERATOR = Principal(staff=True)


class Command(BaseCommand):
    help = "Export, apply (with a dry-run diff), back up and restore the configuration."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        out = sub.add_parser("export", help="print the configuration (or one tenant's) as YAML or JSON")
        out.add_argument("--tenant", help="only this tenant's objects (its slug)")
        out.add_argument("--format", choices=document.FORMATS, default="yaml")
        out.add_argument("--include-keys", action="store_true",
                         help="add the certificates' private keys and the webhook secrets, encrypted with "
                              "the passphrase")
        out.add_argument("--passphrase-file", help="file holding the passphrase for --include-keys")
        out.add_argument("--output", "-o", help="write here instead of standard output")
        put = sub.add_parser("apply", help="make the configuration what FILE describes")
        put.add_argument("file", help="YAML or JSON file; - for standard input")
        put.add_argument("--dry-run", action="store_true", help="print the diff and problems; change nothing")
        put.add_argument("--prune", action="store_true", help="delete what the file's sections do not name")
        put.add_argument("--tenant", help="apply within this tenant only (its slug)")
        put.add_argument("--note", default="", help="the change note of the new version")
        put.add_argument("--passphrase-file", help="file holding the passphrase of the file's private keys")
        save = sub.add_parser("backup", help="write everything needed to rebuild this installation")
        save.add_argument("file")
        save.add_argument("--with-passwords", action="store_true",
                          help="include users' password hashes and API token hashes")
        load = sub.add_parser("restore", help="rebuild an empty installation from a backup")
        load.add_argument("file")

    def handle(self, *args, action, **opts):
        getattr(self, f"do_{action}")(**opts)

    # ---------------------------------------------------------- export / apply

    def do_export(self, *, tenant=None, format="yaml", include_keys=False, passphrase_file=None, output=None,
                  **_):
        scope = Tenant.objects.filter(slug=tenant).first() if tenant else None
        if tenant and scope is None:
            raise CommandError(f"there is no tenant {tenant}")
        passphrase = None
        if include_keys:
            passphrase = self.passphrase(passphrase_file, required=True)
        elif passphrase_file:
            raise CommandError("--passphrase-file goes with --include-keys")
        text = document.dump(export.export(scope, passphrase=passphrase), format)
        if output:
            Path(output).write_text(text)
        else:
            self.stdout.write(text, ending="")

    def do_apply(self, *, file, dry_run=False, prune=False, tenant=None, note="", passphrase_file=None, **_):
        text = sys.stdin.read() if file == "-" else self.read(file)
        result = applying.apply(text, principal=OPERATOR, actor=Actor.system(), tenant=tenant, note=note,
                                dry_run=dry_run, prune=prune, passphrase=self.passphrase(passphrase_file))
        for change in result.changes:
            self.stdout.write(str(change))
            for f in change.fields:
                self.stdout.write(f"    {f['field']}: {shown(f['before'])} → {shown(f['after'])}")
        for problem in result.problems:
            self.stdout.write(f"ERROR {problem}")
        if result.problems:
            raise CommandError(f"{len(result.problems)} problem(s); nothing was changed")
        self.stdout.write(self.summary(result))

    @staticmethod
    def summary(result) -> str:
        counts = result.as_dict()["summary"]
        what = f"{counts['create']} to create, {counts['update']} to change, {counts['delete']} to delete"
        if not result.changes:
            return "Nothing to change."
        if result.dry_run:
            return f"Dry run: {what}; nothing was changed."
        version = f"version {result.version}" if result.version else "no new version (the routing config is the same)"
        return f"Applied: {what}; {version}."

    # ---------------------------------------------------------- backup / restore

    def do_backup(self, *, file, with_passwords=False, **_):
        data = backup.backup(with_passwords=with_passwords)
        Path(file).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        Path(file).chmod(0o600)
        counts = ", ".join(f"{len(rows)} {label.split('.')[-1]}" for label, rows in data["rows"].items())
        self.stdout.write(f"Backed up {counts}, {len(data['users'])} users to {file}")

    def do_restore(self, *, file, **_):
        try:
            data = json.loads(self.read(file))
            restored = backup.restore(data)
        except (ValueError, KeyError) as exc:
            raise CommandError(f"cannot restore {file}: {exc}") from None
        counts = ", ".join(f"{n} {what}" for what, n in restored.counts.items())
        self.stdout.write(f"Restored {counts}.")
        if restored.version is None:
            self.stdout.write("No config version in the backup.")
        elif restored.same_hash:
            self.stdout.write(f"Version {restored.version} sha256 {restored.sha256}: the stored configuration "
                              "compiles to it, so reconnecting nodes keep their configuration.")
        else:
            self.stdout.write(f"WARNING version {restored.version} sha256 {restored.sha256}, but the stored "
                              f"configuration compiles to {restored.compiled_sha256}; run checkconfig.")

    # ---------------------------------------------------------- files

    @staticmethod
    def read(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None

    def passphrase(self, path: str | None, required: bool = False) -> bytes | None:
        if not path:
            if required:
                raise CommandError("--include-keys needs --passphrase-file")
            return None
        value = self.read(path).rstrip("\r\n").encode()
        try:
            return keys.check_passphrase(value)
        except keys.KeyProblem as exc:
            raise CommandError(str(exc)) from None


def shown(value) -> str:
    if isinstance(value, str) and "\n" in value:
        return f"<{value.count(chr(10))} lines>"
    return json.dumps(value, ensure_ascii=False)
