"""What schemathesis found, pinned: malformed input is a JSON 4xx naming the field."""
import json

import pytest

from controlplane.proxy.models import Pool, Route

pytestmark = pytest.mark.django_db

BASE = "/api/v1"


def test_it_refuses_malformed_pagination(staff_api):
    for query in ("offset=null", "limit=-1", "limit=abc", "offset=1&offset=2"):
        r = staff_api.get(f"{BASE}/routes/?{query}")
        assert r.status_code == 400 and set(r.json()) <= {"limit", "offset"}, (query, r.json())
    assert staff_api.get(f"{BASE}/routes/?limit=1&offset=1").json()["count"] == 2


def test_it_answers_malformed_ids_and_unknown_paths_with_a_json_404(staff_api):
    for url in ("tenants/%C2%84/", "versions/abc/", "versions/99999999999999999999/", "routes/0.5/",
                "nodes/0.5/revoke/", "nope/"):
        r = (staff_api.post if url.endswith("revoke/") else staff_api.get)(f"{BASE}/{url}")
        assert r.status_code == 404 and r["Content-Type"] == "application/json", url


def test_it_takes_json_types_as_the_schema_states(staff_api, world):
    a = world["a"]
    before = list(Route.objects.values())
    for body, field in (({"name": 0}, "name"), ({"priority": "5"}, "priority"), ({"enabled": "yes"}, "enabled"),
                        ({"hosts": [1]}, "hosts"), ({"name": "bad\ud800"}, "name"),
                        ({"path_type": "\ud800"}, "path_type")):
        r = staff_api.patch(f"{BASE}/routes/{a.route.pk}/", json.dumps(body), content_type="application/json")
        assert r.status_code == 400 and field in r.json(), (body, r.json())
    assert list(Route.objects.values()) == before


def test_it_takes_only_json_bodies(staff_api):
    r = staff_api.post(f"{BASE}/pools/", {"name": "x", "targets": []}, format="multipart")
    assert r.status_code == 415 and not Pool.objects.filter(name="x").exists()


def test_it_answers_an_oversized_body_with_a_json_413(staff_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    r = staff_api.post(f"{BASE}/certificates/", {"name": "big", "certificate_pem": "x" * 5000}, format="json")
    assert r.status_code == 413 and r.json()["detail"]


def test_it_refuses_an_empty_integer_filter(staff_api):
    response = staff_api.get("/api/v1/routes/?pool=")
    assert response.status_code == 400
    assert "pool" in response.json()
