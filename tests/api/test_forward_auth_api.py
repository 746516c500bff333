"""The route field forward_auth over /api/v1/routes/: set and cleared by PATCH, refused
with a 400 naming the field (syntax, the tenant upstream policy), viewers cannot write,
and the OpenAPI schema documents the object."""
import pytest

from controlplane.proxy.models import Route
from controlplane.publishing.models import ConfigVersion

from .conftest import client_for

pytestmark = pytest.mark.django_db

BASE = "/api/v1"
OAUTH2_PROXY = {"url": "https://oauth2.example.com/oauth2/auth",
                "response_headers": ["X-Auth-Request-User", "X-Auth-Request-Email"], "timeout": 3}


def test_an_editor_sets_and_clears_forward_auth(world, as_role):
    api = as_role("editor")
    route = world["a"].route
    resp = api.patch(f"{BASE}/routes/{route.pk}/", {"forward_auth": OAUTH2_PROXY}, format="json")
    assert resp.status_code == 200, resp.json()
    assert resp.json()["forward_auth"] == {**OAUTH2_PROXY, "timeout": 3.0}
    assert api.get(f"{BASE}/routes/{route.pk}/").json()["forward_auth"]["url"] == OAUTH2_PROXY["url"]
    [entry] = [r for r in ConfigVersion.objects.latest("number").snapshot["routes"] if r["id"] == route.pk]
    assert entry["forward_auth"]["response_headers"] == OAUTH2_PROXY["response_headers"]
    # a PATCH of another field keeps it
    assert api.patch(f"{BASE}/routes/{route.pk}/", {"priority": 5}, format="json").json()["forward_auth"]
    resp = api.patch(f"{BASE}/routes/{route.pk}/", {"forward_auth": None}, format="json")
    assert resp.status_code == 200 and resp.json()["forward_auth"] is None
    assert Route.objects.get(pk=route.pk).forward_auth is None


def test_bad_or_forbidden_urls_are_a_400_and_change_nothing(world, as_role):
    api = as_role("editor")
    route = world["a"].route
    for body in ({"url": "gopher://auth.example.com/"}, {"url": "http://127.0.0.1:9091/api/verify"},
                 {"url": "https://auth.example.com/", "response_headers": ["Content-Length"]},
                 {"url": "https://auth.example.com/", "timeout": 120}, {"response_headers": []}):
        resp = api.patch(f"{BASE}/routes/{route.pk}/", {"forward_auth": body}, format="json")
        assert resp.status_code == 400 and "forward_auth" in resp.json(), (body, resp.json())
    assert Route.objects.get(pk=route.pk).forward_auth is None
    viewer = as_role("viewer")
    assert viewer.patch(f"{BASE}/routes/{route.pk}/", {"forward_auth": OAUTH2_PROXY},
                        format="json").status_code == 403


def test_the_openapi_schema_documents_forward_auth(world):
    schema = client_for(world["staff"]).get(f"{BASE}/schema/", HTTP_ACCEPT="application/json").json()
    props = schema["components"]["schemas"]["Route"]["properties"]
    assert "forward_auth" in props and "forward auth" in str(props["forward_auth"]).lower()
    fa = schema["components"]["schemas"]["ForwardAuth"]["properties"]
    assert {"url", "response_headers", "timeout"} <= set(fa)
    assert "Authelia" in fa["url"]["description"]
