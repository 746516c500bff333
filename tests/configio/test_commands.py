"""`manage.py config ...` run as a user runs them: subprocesses (so Django's system checks
run too) against real, separate installations (each its own fresh SQLite file)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from controlplane.configio import keys
from tests.controlplane.helpers import PUBLIC_IP, issue

ROOT = Path(__file__).resolve().parents[2]
ENCRYPTION_KEY = "configio-test-key"
PASSPHRASE = "correct horse battery"
SHOW_STATE = """
from controlplane.publishing import compiler, publisher
from controlplane.publishing.models import Node
from controlplane.tenancy.models import hash_token
from dataplane import schema
import json, sys
latest = publisher.current_version()
print(json.dumps({"version": latest.number if latest else None, "sha256": latest.sha256 if latest else None,
                  "compiled": schema.snapshot_hash(compiler.compile_snapshot()),
                  "nodes": sorted(Node.objects.values_list("name", "token_hash"))}))
"""


def environment(var: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(SWITCHYARD_VAR_DIR=str(var), SWITCHYARD_SQLITE_PATH=str(var / "db.sqlite3"),
               SWITCHYARD_ENCRYPTION_KEY=ENCRYPTION_KEY, DJANGO_SETTINGS_MODULE="controlplane.settings")
    return env


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> Path:
    """One migrated database, copied for every fresh installation (migrating is slow)."""
    var = tmp_path_factory.mktemp("template")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=environment(var),
                   check=True, timeout=300)
    return var / "db.sqlite3"


class Installation:
    def __init__(self, var: Path, template: Path | None = None, database_url: str | None = None):
        var.mkdir()
        self.var, self.env = var, environment(var)
        if database_url:
            self.env["DATABASE_URL"] = database_url
            self.run("migrate", "--noinput", "-v0")
        else:
            shutil.copy(template, var / "db.sqlite3")

    def run(self, *args, check=True) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=300)
        if check:
            assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done

    def state(self) -> dict:
        return json.loads(self.run("shell", "-c", SHOW_STATE).stdout.strip().splitlines()[-1])


@pytest.fixture
def fresh(tmp_path, migrated):
    made = iter(range(100))
    return lambda: Installation(tmp_path / f"installation-{next(made)}", migrated)


def config_file(tmp_path: Path) -> Path:
    pem, key = issue("shop.example.com", "*.shop.example.com")
    data = {
        "switchyard": 1,
        "tenants": [{"slug": "shop", "name": "Shop", "delegations": ["shop.example.com"]}],
        "certificates": [{"tenant": "shop", "name": "wildcard", "certificate_pem": pem,
                          "private_key_pem": keys.encrypt(key, PASSPHRASE.encode())}],
        "pools": [{"tenant": "shop", "name": "web", "targets": [{"host": PUBLIC_IP, "port": 8080}],
                   "health_check": {"enabled": True, "path": "/healthz"}},
                  {"name": "local", "targets": [{"host": "127.0.0.1", "port": 9000}]}],
        "routes": [{"tenant": "shop", "name": "api", "hosts": ["api.shop.example.com"], "pool": "web",
                    "certificate": "wildcard"},
                   {"name": "status", "hosts": ["status.localhost"], "pool": "local"}],
        "alert_channels": [{"tenant": "shop", "name": "oncall", "kind": "webhook", "url": f"https://{PUBLIC_IP}/h",
                            "secret": "s3cret"}],
    }
    path = tmp_path / "switchyard.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def passphrase_file(tmp_path: Path) -> Path:
    path = tmp_path / "passphrase"
    path.write_text(PASSPHRASE + "\n")
    return path


def test_apply_dry_run_then_apply_then_export_round_trips_to_another_installation(tmp_path, fresh):
    source, target = fresh(), fresh()
    file, secret = config_file(tmp_path), passphrase_file(tmp_path)
    dry = source.run("config", "apply", str(file), "--dry-run", "--passphrase-file", str(secret))
    assert "+ route shop/api" in dry.stdout and "Dry run: 7 to create" in dry.stdout
    assert yaml.safe_load(source.run("config", "export").stdout)["routes"] == []
    done = source.run("config", "apply", str(file), "--note", "from git", "--passphrase-file", str(secret))
    assert "Applied: 7 to create, 0 to change, 0 to delete; version 1." in done.stdout
    again = source.run("config", "apply", str(file), "--passphrase-file", str(secret))
    assert again.stdout.strip().endswith("Nothing to change.")
    exported = tmp_path / "exported.yaml"
    source.run("config", "export", "--include-keys", "--passphrase-file", str(secret), "-o", str(exported))
    target.run("config", "apply", str(exported), "--passphrase-file", str(secret))
    assert target.run("config", "export").stdout == source.run("config", "export").stdout
    assert target.run("config", "export", "--format", "json").stdout == \
        source.run("config", "export", "--format", "json").stdout


def test_a_refused_file_exits_1_with_every_problem_and_changes_nothing(tmp_path, fresh):
    installation = fresh()
    data = yaml.safe_load(config_file(tmp_path).read_text())
    data["routes"][0]["hosts"] = ["api.elsewhere.example.net"]
    data["pools"][1]["retries"] = "many"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    done = installation.run("config", "apply", str(bad), "--passphrase-file", str(passphrase_file(tmp_path)),
                            check=False)
    assert done.returncode == 1
    errors = [line for line in done.stdout.splitlines() if line.startswith("ERROR")]
    assert errors == [
        "ERROR pools[1].retries (pool local): must be an integer",
        "ERROR routes[0].hosts (route shop/api): api.elsewhere.example.net is outside tenant shop's delegations",
        "ERROR routes[0].certificate (route shop/api): certificate wildcard does not cover api.elsewhere.example.net "
        "(it covers shop.example.com, *.shop.example.com)",
    ], done.stdout
    assert "3 problem(s); nothing was changed" in done.stderr
    assert installation.state()["version"] is None


def test_a_tenant_export_and_a_tenant_scoped_prune(tmp_path, fresh):
    installation = fresh()
    installation.run("config", "apply", str(config_file(tmp_path)), "--passphrase-file",
                     str(passphrase_file(tmp_path)))
    shop = yaml.safe_load(installation.run("config", "export", "--tenant", "shop").stdout)
    assert shop["tenant"] == "shop" and [r["name"] for r in shop["routes"]] == ["api"]
    shop["routes"], shop["certificates"] = [], []
    pruned = tmp_path / "shop.yaml"
    pruned.write_text(yaml.safe_dump(shop))
    done = installation.run("config", "apply", str(pruned), "--prune", "--tenant", "shop")
    assert "- route shop/api" in done.stdout and "- certificate shop/wildcard" in done.stdout
    routes = yaml.safe_load(installation.run("config", "export").stdout)["routes"]
    assert [r["name"] for r in routes] == ["status"]


def test_backup_then_restore_into_a_fresh_database_keeps_the_nodes_configuration(tmp_path, fresh):
    source = fresh()
    source.run("config", "apply", str(config_file(tmp_path)), "--passphrase-file", str(passphrase_file(tmp_path)))
    token = source.run("registernode", "edge-1").stdout.split()[-1]
    before = source.state()
    backup = tmp_path / "backup.json"
    source.run("config", "backup", str(backup))
    assert oct(backup.stat().st_mode & 0o777) == "0o600"
    assert "s3cret" not in backup.read_text() and "PRIVATE KEY" not in backup.read_text()

    restored = fresh()   # a fresh database: the old one is gone
    done = restored.run("config", "restore", str(backup))
    assert f"sha256 {before['sha256']}: the stored configuration compiles to it" in done.stdout
    after = restored.state()
    assert after == before and after["compiled"] == before["sha256"]
    from controlplane.tenancy.models import hash_token
    assert ["edge-1", hash_token(token)] in after["nodes"]
    assert restored.run("config", "export").stdout == source.run("config", "export").stdout
    again = restored.run("config", "restore", str(backup), check=False)
    assert again.returncode == 1 and "restore needs an empty installation" in again.stderr


def test_restore_needs_the_same_encryption_key(tmp_path, fresh):
    source = fresh()
    source.run("config", "apply", str(config_file(tmp_path)), "--passphrase-file", str(passphrase_file(tmp_path)))
    backup = tmp_path / "backup.json"
    source.run("config", "backup", str(backup))
    other = fresh()
    other.env["SWITCHYARD_ENCRYPTION_KEY"] = "another-key"
    done = other.run("config", "restore", str(backup), check=False)
    assert done.returncode == 1 and "cannot be decrypted" in done.stderr
    assert other.state()["version"] is None


@pytest.fixture
def postgres_databases(postgres_url):
    """Two fresh, empty PostgreSQL databases, dropped afterwards."""
    import uuid

    import psycopg
    names = [f"sy_configio_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    base = postgres_url.rsplit("/", 1)[0]
    yield [f"{base}/{name}" for name in names]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_backup_then_restore_into_a_fresh_postgresql_database(tmp_path, postgres_databases):
    source = Installation(tmp_path / "source", database_url=postgres_databases[0])
    source.run("config", "apply", str(config_file(tmp_path)), "--passphrase-file", str(passphrase_file(tmp_path)))
    source.run("registernode", "edge-1")
    backup = tmp_path / "backup.json"
    source.run("config", "backup", str(backup))
    restored = Installation(tmp_path / "restored", database_url=postgres_databases[1])
    restored.run("config", "restore", str(backup))
    assert restored.state() == source.state()
    # Rows came with their ids: the next ones must not collide with them.
    data = yaml.safe_load(restored.run("config", "export").stdout)
    data["pools"].append({"name": "after-restore", "targets": [{"host": "127.0.0.1", "port": 9100}]})
    data["routes"].append({"name": "after", "hosts": ["after.localhost"], "pool": "after-restore"})
    more = tmp_path / "more.yaml"
    more.write_text(yaml.safe_dump(data))
    done = restored.run("config", "apply", str(more))
    assert "Applied: 2 to create, 0 to change, 0 to delete; version 2." in done.stdout
    restored.run("registernode", "edge-2")
