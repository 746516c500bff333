"""The OpenAPI schema is valid and describes the API; the docs need no CDN."""
import pytest
from openapi_spec_validator import validate
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

BASE = "/api/v1"


@pytest.fixture
def schema():
    r = APIClient().get(f"{BASE}/schema/?format=json")
    assert r.status_code == 200
    return r.json()


def test_it_serves_a_valid_openapi_schema(schema):
    validate(schema)
    assert schema["openapi"].startswith("3.")


def test_it_describes_every_resource_and_action(schema):
    paths = set(schema["paths"])
    for resource in ("tenants", "delegations", "members", "pools", "routes", "certificates", "nodes", "versions",
                     "audit", "alert-channels", "alerts", "api-tokens"):
        assert f"{BASE}/{resource}/" in paths
    assert {f"{BASE}/versions/{{number}}/rollback/", f"{BASE}/versions/diff/", f"{BASE}/tenants/{{slug}}/",
            f"{BASE}/nodes/{{id}}/revoke/", f"{BASE}/api-tokens/{{id}}/revoke/"} <= paths


def test_it_documents_bearer_auth_write_only_fields_and_the_change_note(schema):
    bearer = schema["components"]["securitySchemes"]["bearerAuth"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    components = schema["components"]["schemas"]
    assert "private_key_pem" in components["CertificateRequest"]["properties"]
    assert "private_key_pem" not in components["Certificate"]["properties"]
    assert "secret" not in components["AlertChannel"]["properties"]
    assert "secret" in components["AlertChannelRequest"]["properties"]
    assert {"host", "port", "weight", "enabled", "state"} <= set(components["Target"]["properties"])
    assert "health_check" in components["Pool"]["properties"]
    create_route = schema["paths"][f"{BASE}/routes/"]["post"]
    assert "X-Change-Note" in [p["name"] for p in create_route["parameters"]]
    assert {"201", "400", "401", "403"} <= set(create_route["responses"])
    assert "404" in schema["paths"][f"{BASE}/routes/{{id}}/"]["get"]["responses"]
    diff = schema["paths"][f"{BASE}/versions/diff/"]["get"]
    assert {p["name"] for p in diff["parameters"]} >= {"from", "to"}


def test_it_serves_the_docs_without_a_cdn():
    for url in (f"{BASE}/docs/", f"{BASE}/docs/redoc/"):
        r = APIClient().get(url)
        assert r.status_code == 200
        html = r.content.decode()
        assert "drf_spectacular_sidecar" in html or "/static/" in html
        assert "cdn.jsdelivr" not in html and "unpkg.com" not in html
