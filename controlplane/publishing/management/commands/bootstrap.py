"""`python manage.py bootstrap` — everything `make run` does before starting processes.

Idempotent; safe to run on every start:
1. apply migrations;
2. create the superuser ``admin`` when no superuser exists (password from
   SWITCHYARD_ADMIN_PASSWORD, else generated and printed once);
3. register the local data-plane node (SWITCHYARD_NODE_NAME, default ``local``) and
   save its token to <SWITCHYARD_VAR_DIR>/node.token (mode 0600); when the node
   exists but the token file is missing or stale, a new token is issued;
4. seed the demo route (``demo.localhost`` → pool ``demo`` → the demo backend)
   through the service layer, unless a route named ``demo`` already exists.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from controlplane.audit.services import Actor, record
from controlplane.proxy import services as proxy_services
from controlplane.proxy.models import Pool, Route
from controlplane.publishing.models import Node
from controlplane.tenancy.models import hash_token

DEMO_NAME = "demo"


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def write_secret_file(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` readable by the owner only (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(content + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Command(BaseCommand):
    help = "Prepare a Switchyard installation: migrate, admin user, local node, demo route (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--skip-migrate", action="store_true", help="do not run migrations")
        parser.add_argument("--no-demo", action="store_true", help="do not seed the demo route")
        parser.add_argument("--node-name", default=env("SWITCHYARD_NODE_NAME", "local"))
        parser.add_argument("--token-file", default=os.environ.get("SWITCHYARD_NODE_TOKEN_FILE", ""),
                            help="default: <SWITCHYARD_VAR_DIR>/node.token")
        parser.add_argument("--demo-host", default=env("SWITCHYARD_DEMO_HOST", "demo.localhost"))
        parser.add_argument("--demo-backend", default=os.environ.get("SWITCHYARD_DEMO_BACKEND", ""),
                            help="host:port of the demo backend (default: SWITCHYARD_DEMO_BIND:SWITCHYARD_DEMO_PORT)")

    def handle(self, *args, **opts):
        if not opts["skip_migrate"]:
            call_command("migrate", interactive=False, verbosity=max(0, opts["verbosity"] - 1))
        self.ensure_admin()
        self.ensure_node(opts["node_name"], Path(opts["token_file"] or Path(settings.VAR_DIR) / "node.token"))
        if not opts["no_demo"]:
            self.ensure_demo_route(opts["demo_host"], opts["demo_backend"] or self.default_demo_backend())
        self.stdout.write(self.style.SUCCESS("bootstrap: done"))

    # -- admin user ---------------------------------------------------------
    def ensure_admin(self):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists() or User.objects.filter(username="admin").exists():
            self.stdout.write("bootstrap: admin user exists")
            return
        password = os.environ.get("SWITCHYARD_ADMIN_PASSWORD", "")
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", email="", password=password)
        if generated:
            self.stdout.write(self.style.WARNING(
                "bootstrap: created admin user 'admin' with password: " + password
                + "\n           (shown only this once; set SWITCHYARD_ADMIN_PASSWORD to choose it,"
                + " or run `manage.py changepassword admin`)"))
        else:
            self.stdout.write("bootstrap: created admin user 'admin' (password from SWITCHYARD_ADMIN_PASSWORD)")

    # -- local node ---------------------------------------------------------
    def ensure_node(self, name: str, token_file: Path):
        with transaction.atomic():
            node = Node.objects.select_for_update().filter(name=name).first()
            if node is None:
                node, token = Node.register(name)
                record(Actor.system(), "register", node, after={"name": name}, note="manage.py bootstrap")
                action = "registered"
            else:
                current = token_file.read_text().strip() if token_file.is_file() else ""
                if current and hash_token(current) == node.token_hash:
                    if node.revoked:
                        self.stdout.write(self.style.WARNING(
                            f"bootstrap: node {name!r} is revoked; it will be refused until un-revoked"))
                    self.stdout.write(f"bootstrap: node {name!r} exists, token in {token_file}")
                    return node
                # The token file is gone or belongs to another registration: issue a new one.
                token = "node_" + secrets.token_urlsafe(32)
                node.token_hash = hash_token(token)
                node.save(update_fields=["token_hash"])
                record(Actor.system(), "rotate_token", node, note="manage.py bootstrap: token file missing or stale")
                action = "re-issued the token of"
            write_secret_file(token_file, token)
        self.stdout.write(f"bootstrap: {action} node {name!r}, token saved to {token_file}")
        return node

    # -- demo route ---------------------------------------------------------
    @staticmethod
    def default_demo_backend() -> str:
        host = env("SWITCHYARD_DEMO_BIND", "127.0.0.1")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"{host}:{env('SWITCHYARD_DEMO_PORT', '8081')}"

    def ensure_demo_route(self, demo_host: str, backend: str):
        if Route.objects.filter(tenant__isnull=True, name=DEMO_NAME).exists():
            self.stdout.write("bootstrap: demo route exists")
            return
        host, _, port = backend.rpartition(":")
        if not host or not port.isdigit():
            raise CommandError(f"demo backend must be host:port, got {backend!r}")
        actor = Actor.system()
        note = "bootstrap: demo route"
        pool = Pool.objects.filter(tenant__isnull=True, name=DEMO_NAME).first()
        if pool is None:
            pool = proxy_services.create_pool(
                actor, name=DEMO_NAME, note=note,
                targets=[{"host": host.strip("[]"), "port": int(port), "weight": 1, "state": "enabled"}])
        proxy_services.create_route(actor, name=DEMO_NAME, hosts=[demo_host], path="/", path_type="prefix",
                                    pool=pool, note=note)
        self.stdout.write(f"bootstrap: seeded demo route {demo_host} -> pool {DEMO_NAME!r} -> {backend}")
