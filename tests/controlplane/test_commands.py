"""registernode, createapitoken and checkconfig."""
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from controlplane.proxy.models import Route, Target
from controlplane.publishing.models import Node
from controlplane.tenancy.models import ApiToken, Membership, hash_token

from .helpers import route, tenant

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_it_registers_a_node_and_prints_its_token_last():
    token = run("registernode", "edge-1").split()[-1]
    node = Node.objects.get(name="edge-1")
    assert node.token_hash == hash_token(token) and token.startswith("node_")


def test_it_refuses_a_duplicate_node_name():
    run("registernode", "edge-1")
    with pytest.raises(CommandError):
        run("registernode", "edge-1")


def test_it_creates_an_api_token_and_prints_it_last():
    user = get_user_model().objects.create_user("alice")
    token = run("createapitoken", "alice").split()[-1]
    row = ApiToken.objects.get()
    assert row.token_hash == hash_token(token) and row.user == user and row.tenant is None


def test_it_makes_the_user_a_member_of_the_tenant():
    user = get_user_model().objects.create_user("alice")
    shop = tenant("shop")
    token = run("createapitoken", "alice", "--tenant", "shop", "--role", "editor").split()[-1]
    row = ApiToken.objects.get(token_hash=hash_token(token))
    assert (row.tenant, row.role) == (shop, "editor")
    assert Membership.objects.get(user=user, tenant=shop).role == "editor"


def test_it_keeps_an_existing_membership():
    user = get_user_model().objects.create_user("alice")
    shop = tenant("shop")
    Membership.objects.create(user=user, tenant=shop, role="owner")
    run("createapitoken", "alice", "--tenant", "shop", "--role", "viewer")
    assert Membership.objects.get(user=user, tenant=shop).role == "owner"
    assert ApiToken.objects.get().role == "viewer"


def test_it_refuses_unknown_users_and_tenants():
    get_user_model().objects.create_user("alice")
    with pytest.raises(CommandError, match="no user"):
        run("createapitoken", "bob")
    with pytest.raises(CommandError, match="no tenant"):
        run("createapitoken", "alice", "--tenant", "nope")


def test_it_checks_a_valid_config():
    route("api")
    out = run("checkconfig")
    assert "OK: the stored configuration is valid (1 routes, 1 pools, 0 certificates)" in out
    assert "(published)" in out


def test_it_prints_every_problem_with_its_object_and_fails():
    r = route("api")
    Route.objects.filter(pk=r.pk).update(path="no-slash", request_headers={"set": [{"name": "Host", "value": "x"}]})
    out = StringIO()
    with pytest.raises(CommandError, match="problem"):
        call_command("checkconfig", "--schema-only", stdout=out)
    text = out.getvalue()
    assert f"ERROR route api (id {r.pk}): routes[0].path: must start with /" in text
    assert f"ERROR route api (id {r.pk}): routes[0].request_headers.set[0].name: header rules may not touch Host" \
        in text
    assert "unpublished changes" in text


def test_it_reports_business_rule_problems():
    shop = tenant("shop")
    r = route("api", shop)
    Target.objects.filter(pool=r.pool).update(host="127.0.0.1")  # a tenant target on loopback
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("checkconfig", stdout=out)
    assert f"ERROR pool shop/api-pool (id {r.pool_id}): targets: 127.0.0.1 is a loopback address" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_checkconfig_runs_as_a_user_runs_it(tmp_path):
    """As the README says to run it: a subprocess, so Django's system checks run too."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "SWITCHYARD_SQLITE_PATH": str(tmp_path / "cc.sqlite3")}
    env.pop("DATABASE_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=root, env=env, check=True, timeout=120)
    done = subprocess.run([sys.executable, "manage.py", "checkconfig"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "OK: the stored configuration is valid (0 routes, 0 pools, 0 certificates)" in done.stdout
