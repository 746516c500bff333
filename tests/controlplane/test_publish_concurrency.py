"""Concurrent publishes on PostgreSQL: one version each, numbered without gaps or clashes."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import threading
    import django
    django.setup()
    from django.core.management import call_command
    from django.db import connection
    call_command("migrate", verbosity=0)
    from controlplane.proxy import services
    from controlplane.proxy.models import Route
    from controlplane.publishing.models import ConfigVersion
    actor = services.Actor.system()
    pool = services.create_pool(actor, name="web", targets=[{"host": "127.0.0.1", "port": 80}])
    for i in range(8):
        services.create_route(actor, name=f"r{i}", hosts=[f"r{i}.localhost"], pool=pool)
    start = ConfigVersion.objects.count()
    errors = []
    def edit(i):
        try:
            route = Route.objects.get(name=f"r{i}")
            services.update_route(actor, route, path=f"/v{i}")
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            connection.close()
    threads = [threading.Thread(target=edit, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    numbers = list(ConfigVersion.objects.order_by("number").values_list("number", flat=True))
    latest = ConfigVersion.objects.latest()
    paths = sorted(r["path"] for r in latest.snapshot["routes"])
    print("RESULT", errors, len(numbers) - start, numbers == list(range(1, len(numbers) + 1)), paths)
""")


@pytest.mark.postgres
def test_it_numbers_concurrent_publishes_without_clashes(postgres_url, tmp_path):
    from tests.e2e.harness import PostgresDatabase

    db = PostgresDatabase(postgres_url)
    try:
        env = dict(os.environ, DATABASE_URL=db.url, DJANGO_SETTINGS_MODULE="controlplane.settings",
                   SWITCHYARD_VAR_DIR=str(tmp_path), REDIS_URL="", SWITCHYARD_ENCRYPTION_KEY="k")
        proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120)
    finally:
        db.drop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    assert line == "RESULT [] 8 True " + str(sorted(f"/v{i}" for i in range(8)))
