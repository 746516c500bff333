"""`manage.py bootstrap` (what `make run` does before starting processes) on an empty var dir."""
from __future__ import annotations

import json
import stat
import subprocess

import pytest

from tests.conftest import POSTGRES_URL, require_services
from tests.e2e.harness import CPSHELL, PYTHON, REPO, ControlPlaneEnv, PostgresDatabase

pytestmark = pytest.mark.e2e


def state(cp: ControlPlaneEnv) -> dict:
    result = subprocess.run([PYTHON, str(CPSHELL), "bootstrap_state"], cwd=REPO, env=cp.env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])["result"]


def check_password(cp: ControlPlaneEnv, username: str, password: str) -> bool:
    code = ("from django.contrib.auth import get_user_model;"
            f"print(get_user_model().objects.get(username={username!r}).check_password({password!r}))")
    return cp.manage("shell", "-c", code).stdout.strip().splitlines()[-1] == "True"


@pytest.fixture(params=["embedded", pytest.param("production", marks=pytest.mark.postgres)])
def empty_install(request, tmp_path):
    database = None
    if request.param == "production":
        require_services("postgres")
        database = PostgresDatabase(POSTGRES_URL)
    # No REDIS_URL needed for bootstrap; production here means "the PostgreSQL database".
    cp = ControlPlaneEnv("embedded", tmp_path, database_url="")
    if database:
        cp.env["DATABASE_URL"] = database.url
    yield cp
    if database:
        database.drop()


def test_bootstrap_creates_admin_node_and_demo_route_and_is_idempotent(empty_install):
    cp = empty_install
    token_file = cp.var_dir / "node.token"
    assert not token_file.exists()

    first = cp.manage("bootstrap")
    assert "password:" in first.stdout, first.stdout  # generated and printed once
    password = first.stdout.split("password:", 1)[1].split()[0]
    assert check_password(cp, "admin", password)

    s1 = state(cp)
    assert s1["admins"] == ["admin"]
    assert s1["nodes"] == ["local"]
    demo = [r for r in s1["routes"] if r["name"] == "demo"]
    assert demo == [{"name": "demo", "hosts": ["demo.localhost"], "pool": "demo", "targets": ["127.0.0.1:8081"]}]
    assert s1["versions"] >= 1
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    import hashlib
    assert hashlib.sha256(token.encode()).hexdigest() == s1["node_token_hashes"]["local"]

    # Running it again changes nothing and prints no password.
    second = cp.manage("bootstrap")
    assert "password:" not in second.stdout
    assert state(cp) == s1
    assert token_file.read_text().strip() == token

    # The token file is gone: a new token is issued for the existing node (no second node).
    token_file.unlink()
    cp.manage("bootstrap")
    s3 = state(cp)
    assert s3["nodes"] == ["local"] and s3["routes"] == s1["routes"] and s3["versions"] == s1["versions"]
    new_token = token_file.read_text().strip()
    assert new_token != token
    assert hashlib.sha256(new_token.encode()).hexdigest() == s3["node_token_hashes"]["local"]
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


def test_bootstrap_takes_admin_password_from_environment(tmp_path):
    cp = ControlPlaneEnv("embedded", tmp_path)
    out = cp.manage("bootstrap", "--no-demo", env={"SWITCHYARD_ADMIN_PASSWORD": "s3cret-Pa55word"}).stdout
    assert "s3cret-Pa55word" not in out
    assert check_password(cp, "admin", "s3cret-Pa55word")
