"""A preview is what gets published: the digest the preview shows is the sha256 of the
version that confirming it makes, also on PostgreSQL, whose id sequences do not roll
back with the preview's transaction (else creating a pool, a route or a proxy host
would say "the configuration changed since the preview" every time)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import django
    django.setup()
    from django.core.management import call_command
    call_command("migrate", verbosity=0)
    from controlplane.dashboard import changes
    from controlplane.proxy import hosts, services
    from controlplane.publishing import publisher
    actor = services.Actor.system()
    hosts.create_proxy_host(actor, hosts=["first.localhost"], upstreams=["http://127.0.0.1:9000"])
    def call():
        return hosts.create_proxy_host(actor, hosts=["app.localhost"],
                                       upstreams=["http://127.0.0.1:9001", "http://127.0.0.1:9002"]).route
    first, second = changes.preview(call), changes.preview(call)
    call()
    print("RESULT", first.digest == second.digest, first.digest == publisher.current_version().sha256)
""")


def test_the_previewed_digest_is_the_published_versions_sha256(db):
    from controlplane.dashboard import changes
    from controlplane.proxy import hosts, services
    from controlplane.publishing import publisher

    def call():
        return hosts.create_proxy_host(services.Actor.system(), hosts=["app.localhost"],
                                       upstreams=["http://127.0.0.1:9001"]).route
    digest = changes.preview(call).digest
    call()
    assert publisher.current_version().sha256 == digest


@pytest.mark.postgres
def test_on_postgresql_too(postgres_url, tmp_path):
    from tests.e2e.harness import PostgresDatabase

    database = PostgresDatabase(postgres_url)
    try:
        env = dict(os.environ, DATABASE_URL=database.url, DJANGO_SETTINGS_MODULE="controlplane.settings",
                   SWITCHYARD_VAR_DIR=str(tmp_path), REDIS_URL="", SWITCHYARD_ENCRYPTION_KEY="k")
        proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300)
    finally:
        database.drop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1] == "RESULT True True"
