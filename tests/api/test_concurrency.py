"""Concurrent writers never undo each other: a PATCH changes only the fields it names,
on the stored row under its lock; every object has an ETag and a stale If-Match is a
412 that changes nothing."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from controlplane.proxy import services
from controlplane.proxy.models import Pool, Route
from controlplane.publishing.models import ConfigVersion
from tests.controlplane.helpers import ACTOR

REPO = Path(__file__).resolve().parents[2]


def etag(client, url):
    response = client.get(url)
    assert response.status_code == 200, response.content
    assert response["ETag"].startswith('"') and response["ETag"].endswith('"')
    return response["ETag"]


@pytest.mark.parametrize("kind", ["routes", "pools", "certificates", "alert-channels"])
def test_every_object_has_an_etag_that_moves_when_it_changes(world, staff_api, kind):
    obj = {"routes": world["a"].route, "pools": world["a"].pool, "certificates": world["a"].certificate,
           "alert-channels": world["a"].channel}[kind]
    url = f"/api/v1/{kind}/{obj.pk}/"
    before = etag(staff_api, url)
    assert etag(staff_api, url) == before, "reading must not change the version"
    response = staff_api.patch(url, {"name": "renamed"}, format="json")
    assert response.status_code == 200, response.content
    assert response["ETag"] != before
    assert etag(staff_api, url) == response["ETag"]


def test_tenants_and_delegations_have_etags(world, staff_api):
    assert etag(staff_api, f"/api/v1/tenants/{world['a'].tenant.slug}/")
    assert etag(staff_api, f"/api/v1/delegations/{world['a'].delegation.pk}/")


def test_a_stale_if_match_is_a_412_that_changes_nothing(world, staff_api):
    url = f"/api/v1/routes/{world['a'].route.pk}/"
    seen = etag(staff_api, url)
    assert staff_api.patch(url, {"priority": 7}, format="json").status_code == 200  # another writer
    versions = ConfigVersion.objects.count()

    response = staff_api.patch(url, {"path": "/mine"}, format="json", HTTP_IF_MATCH=seen)

    assert response.status_code == 412
    assert "changed since you read it" in response.json()["detail"]
    assert response["ETag"] == etag(staff_api, url)
    route = Route.objects.get(pk=world["a"].route.pk)
    assert (route.path, route.priority) == ("/", 7)
    assert ConfigVersion.objects.count() == versions


def test_a_current_if_match_or_a_star_writes(world, staff_api):
    url = f"/api/v1/routes/{world['a'].route.pk}/"
    response = staff_api.patch(url, {"path": "/one"}, format="json", HTTP_IF_MATCH=etag(staff_api, url))
    assert response.status_code == 200, response.content
    response = staff_api.patch(url, {"path": "/two"}, format="json", HTTP_IF_MATCH="*")
    assert response.status_code == 200, response.content
    listed = f'"nope", {etag(staff_api, url)}'
    response = staff_api.put(url, {**staff_api.get(url).json(), "path": "/three"}, format="json",
                             HTTP_IF_MATCH=listed)
    assert response.status_code == 200, response.content
    assert Route.objects.get(pk=world["a"].route.pk).path == "/three"


def test_a_stale_if_match_on_delete_keeps_the_object(world, staff_api):
    route = world["a"].route
    url = f"/api/v1/routes/{route.pk}/"
    seen = etag(staff_api, url)
    staff_api.patch(url, {"priority": 3}, format="json")
    assert staff_api.delete(url, HTTP_IF_MATCH=seen).status_code == 412
    assert Route.objects.filter(pk=route.pk).exists()
    assert staff_api.delete(url, HTTP_IF_MATCH=etag(staff_api, url)).status_code == 204
    assert not Route.objects.filter(pk=route.pk).exists()


def test_if_none_match_answers_304(world, staff_api):
    url = f"/api/v1/pools/{world['a'].pool.pk}/"
    tag = etag(staff_api, url)
    response = staff_api.get(url, HTTP_IF_NONE_MATCH=tag)
    assert response.status_code == 304
    assert response["ETag"] == tag


def test_the_schema_documents_if_match_and_412(staff_api):
    schema = staff_api.get("/api/v1/schema/?format=json").json()
    patch = schema["paths"]["/api/v1/routes/{id}/"]["patch"]
    assert "If-Match" in [p["name"] for p in patch["parameters"]]
    assert "412" in patch["responses"]


def test_an_update_from_a_stale_object_keeps_the_other_writers_fields(world):
    """Two writers read the same route, then each changes a different field."""
    first = Route.objects.get(pk=world["a"].route.pk)
    second = Route.objects.get(pk=world["a"].route.pk)
    services.update_route(ACTOR, first, path="/first")
    services.update_route(ACTOR, second, priority=9)
    stored = Route.objects.get(pk=world["a"].route.pk)
    assert (stored.path, stored.priority) == ("/first", 9)
    assert second.path == "/first", "the caller's object shows what was stored"


def test_a_pool_update_from_a_stale_object_keeps_the_other_writers_fields(world):
    first = Pool.objects.get(pk=world["a"].pool.pk)
    second = Pool.objects.get(pk=world["a"].pool.pk)
    services.update_pool(ACTOR, first, retries=4)
    services.update_pool(ACTOR, second, read_timeout=12.5)
    stored = Pool.objects.get(pk=world["a"].pool.pk)
    assert (stored.retries, stored.read_timeout) == (4, 12.5)


SCRIPT = textwrap.dedent("""
    import threading
    import django
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    call_command("migrate", verbosity=0)
    from rest_framework.test import APIClient
    from controlplane.proxy import services
    from controlplane.proxy.models import Pool, Route
    from controlplane.tenancy.models import ApiToken
    actor = services.Actor.system()
    pool = services.create_pool(actor, name="web", targets=[{"host": "127.0.0.1", "port": 80}])
    route = services.create_route(actor, name="r", hosts=["r.localhost"], pool=pool)
    staff = get_user_model().objects.create_user("staff", is_staff=True)
    _, token = ApiToken.issue(staff)
    FIELDS = {  # writer → (url, field, values)
        "route-path": (f"/api/v1/routes/{route.pk}/", "path", [f"/p{i}" for i in range(6)]),
        "route-priority": (f"/api/v1/routes/{route.pk}/", "priority", list(range(1, 7))),
        "route-name": (f"/api/v1/routes/{route.pk}/", "name", [f"n{i}" for i in range(6)]),
        "route-preserve": (f"/api/v1/routes/{route.pk}/", "preserve_host", [True, False] * 3),
        "pool-retries": (f"/api/v1/pools/{pool.pk}/", "retries", list(range(1, 7))),
        "pool-read": (f"/api/v1/pools/{pool.pk}/", "read_timeout", [float(10 + i) for i in range(6)]),
        "pool-connect": (f"/api/v1/pools/{pool.pk}/", "connect_timeout", [float(1 + i) for i in range(6)]),
        "pool-name": (f"/api/v1/pools/{pool.pk}/", "name", [f"pool{i}" for i in range(6)]),
    }
    errors = []
    def write(name):
        url, field, values = FIELDS[name]
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        try:
            for value in values:
                response = client.patch(url, {field: value}, format="json")
                if response.status_code != 200:
                    errors.append((name, response.status_code, response.content[:200]))
        finally:
            connection.close()
    threads = [threading.Thread(target=write, args=(name,)) for name in FIELDS]
    [t.start() for t in threads]
    [t.join() for t in threads]
    route, pool = Route.objects.get(pk=route.pk), Pool.objects.get(pk=pool.pk)
    lost = [name for name, (url, field, values) in FIELDS.items()
            if getattr(route if "routes" in url else pool, field) != values[-1]]
    print("RESULT", errors, lost)
""")


@pytest.mark.postgres
def test_concurrent_patches_of_different_fields_lose_nothing(postgres_url, tmp_path):
    """Eight writers, each PATCHing its own field of one route or pool six times, at once."""
    from tests.e2e.harness import PostgresDatabase

    db = PostgresDatabase(postgres_url)
    try:
        env = dict(os.environ, DATABASE_URL=db.url, DJANGO_SETTINGS_MODULE="controlplane.settings",
                   SWITCHYARD_VAR_DIR=str(tmp_path), REDIS_URL="", SWITCHYARD_ENCRYPTION_KEY="k")
        proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=180)
    finally:
        db.drop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    assert line == "RESULT [] []"
