"""/api/v1/error-pages/ (platform defaults, staff only) and the route field error_pages:
writes are validated by the nodes' own check, become versions and audit entries, and a
tenant's page only ever reaches that tenant's route."""
import pytest

from controlplane.audit.models import AuditEntry
from controlplane.proxy.models import ErrorPage, Route
from controlplane.publishing.models import ConfigVersion

from .conftest import client_for

pytestmark = pytest.mark.django_db

BASE = "/api/v1"
PAGE = "<h1>{{status}} {{reason}}</h1><p>{{details}}</p><code>{{request_id}}</code> {{ error }}"


def test_staff_sets_a_platform_page_and_it_becomes_a_version_and_an_audit_entry(world, staff_api):
    resp = staff_api.post(f"{BASE}/error-pages/", {"status": 502, "body": PAGE}, format="json",
                          HTTP_X_CHANGE_NOTE="branded 502")
    assert resp.status_code == 201, resp.json()
    snap = ConfigVersion.objects.latest("number").snapshot
    assert snap["error_pages"] == {"502": PAGE}
    entry = AuditEntry.objects.filter(object_type="errorpage").latest("id")
    assert entry.action == "create" and entry.note == "branded 502" and entry.after["body"] == PAGE
    assert staff_api.get(f"{BASE}/error-pages/").json() == [resp.json()]
    resp = staff_api.patch(f"{BASE}/error-pages/502/", {"body": "<p>{{request_id}}</p>"}, format="json")
    assert resp.status_code == 200 and resp.json()["body"] == "<p>{{request_id}}</p>"
    assert staff_api.post(f"{BASE}/error-pages/", {"status": 502, "body": "x"}, format="json").status_code == 400
    assert staff_api.delete(f"{BASE}/error-pages/502/").status_code == 204
    assert "error_pages" not in ConfigVersion.objects.latest("number").snapshot
    assert not ErrorPage.objects.exists()


def test_unknown_placeholders_oversize_and_other_statuses_are_refused_naming_the_field(world, staff_api):
    resp = staff_api.post(f"{BASE}/error-pages/", {"status": 503, "body": "<p>{{ user.name }}</p>"}, format="json")
    assert resp.status_code == 400 and "unknown placeholder {{user.name}}" in str(resp.json()["body"])
    resp = staff_api.post(f"{BASE}/error-pages/", {"status": 503, "body": "x" * (64 * 1024 + 1)}, format="json")
    assert resp.status_code == 400 and "64 KiB" in str(resp.json()["body"])
    resp = staff_api.post(f"{BASE}/error-pages/", {"status": 500, "body": "<p>x</p>"}, format="json")
    assert resp.status_code == 400 and "status" in resp.json()
    assert not ErrorPage.objects.exists()


def test_tenants_cannot_see_or_set_platform_pages(world, as_role):
    ErrorPage.objects.create(status=404, body="<p>nothing here</p>")
    owner = as_role("owner")
    assert owner.get(f"{BASE}/error-pages/").json() == []
    assert owner.get(f"{BASE}/error-pages/404/").status_code == 404
    assert owner.post(f"{BASE}/error-pages/", {"status": 502, "body": "<p>x</p>"}, format="json").status_code == 403
    assert owner.delete(f"{BASE}/error-pages/404/").status_code == 404
    assert ErrorPage.objects.count() == 1


def test_a_route_owner_sets_its_routes_pages_validated_and_only_on_its_route(world, as_role):
    api = as_role("editor")
    route = world["a"].route
    resp = api.patch(f"{BASE}/routes/{route.pk}/", {"error_pages": {"503": PAGE}}, format="json")
    assert resp.status_code == 200, resp.json()
    assert resp.json()["error_pages"] == {"503": PAGE}
    snap = ConfigVersion.objects.latest("number").snapshot
    by_id = {r["id"]: r for r in snap["routes"]}
    assert by_id[route.pk]["error_pages"] == {"503": PAGE}
    assert "error_pages" not in by_id[world["b"].route.pk] and "error_pages" not in snap
    resp = api.patch(f"{BASE}/routes/{route.pk}/", {"error_pages": {"502": "{{secret}}", "404": "<p>x</p>"}},
                     format="json")
    assert resp.status_code == 400
    message = str(resp.json()["error_pages"])
    assert "unknown placeholder {{secret}}" in message and "no 404 page" in message
    assert Route.objects.get(pk=route.pk).error_pages == {"503": PAGE}
    # the other tenant's route is a 404, its pages untouched
    other = world["b"].route
    assert api.patch(f"{BASE}/routes/{other.pk}/", {"error_pages": {"503": "<p>x</p>"}},
                     format="json").status_code == 404
    assert Route.objects.get(pk=other.pk).error_pages == {}


def test_the_openapi_schema_describes_error_pages(world):
    schema = client_for(world["staff"]).get(f"{BASE}/schema/", HTTP_ACCEPT="application/json").json()
    assert "/api/v1/error-pages/" in schema["paths"] and "/api/v1/error-pages/{status}/" in schema["paths"]
    assert "error_pages" in schema["components"]["schemas"]["Route"]["properties"]
    assert {"status", "body"} <= set(schema["components"]["schemas"]["ErrorPage"]["properties"])
