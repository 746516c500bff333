"""GET /api/v1/config/export and POST /api/v1/config/apply with tokens of different roles."""
from __future__ import annotations

import pytest
import yaml
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from controlplane.proxy.models import Pool
from controlplane.publishing.models import ConfigVersion
from controlplane.tenancy.models import ApiToken, Membership

from .conftest import PASSPHRASE
from .helpers import as_data, as_text, exported, item

pytestmark = pytest.mark.django_db

EXPORT, APPLY = "/api/v1/config/export", "/api/v1/config/apply"


def client(user, tenant=None, role="") -> APIClient:
    _, plain = ApiToken.issue(user, tenant=tenant, role=role)
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    return c


@pytest.fixture
def tokens(world):
    User = get_user_model()
    alpha = world["alpha"]["tenant"]
    owner = User.objects.create_user("alpha-owner")
    Membership.objects.create(user=owner, tenant=alpha, role="owner")
    return {
        "staff": client(User.objects.create_user("operator", is_staff=True)),
        "editor": client(owner, alpha, "editor"),
        "viewer": client(owner, alpha, "viewer"),
        "member": client(owner),
    }


def post(c, text, query="", **headers):
    return c.post(f"{APPLY}{query}", data=text.encode(), content_type="application/yaml", **headers)


def test_staff_exports_the_platform_as_yaml_or_json(tokens):
    response = tokens["staff"].get(EXPORT)
    assert response.status_code == 200 and response["Content-Type"].startswith("application/yaml")
    assert response.content.decode() == exported()
    response = tokens["staff"].get(EXPORT, {"format": "json"})
    assert response.status_code == 200 and response.json()["switchyard"] == 1


def test_a_tenant_token_exports_its_own_tenant_only(tokens, world):
    response = tokens["viewer"].get(EXPORT)
    assert response.status_code == 200
    assert response.content.decode() == exported(world["alpha"]["tenant"])
    assert "beta" not in response.content.decode()
    assert tokens["viewer"].get(EXPORT, {"tenant": "beta"}).status_code == 404


def test_private_keys_need_the_editor_role_and_a_passphrase(tokens):
    assert tokens["viewer"].get(EXPORT, {"include_keys": "1"},
                                HTTP_X_CONFIG_PASSPHRASE=PASSPHRASE.decode()).status_code == 403
    assert tokens["editor"].get(EXPORT, {"include_keys": "1"}).status_code == 400
    response = tokens["editor"].get(EXPORT, {"include_keys": "1"}, HTTP_X_CONFIG_PASSPHRASE=PASSPHRASE.decode())
    assert response.status_code == 200 and "BEGIN ENCRYPTED PRIVATE KEY" in response.content.decode()


def test_an_editor_token_dry_runs_then_applies_within_its_tenant(tokens, world):
    data = as_data(exported(world["alpha"]["tenant"]))
    item(data, "pools", "web", "alpha")["retries"] = 4
    versions = ConfigVersion.objects.count()
    dry = post(tokens["editor"], as_text(data), "?dry_run=1")
    assert dry.status_code == 200, dry.json()
    assert dry.json()["changes"] == [{"action": "update", "kind": "pool", "object": "pool alpha/web",
                                      "path": "pools[0]",
                                      "fields": [{"field": "retries", "before": 1, "after": 4}]}]
    assert ConfigVersion.objects.count() == versions
    done = post(tokens["editor"], as_text(data), HTTP_X_CHANGE_NOTE="from CI")
    assert done.status_code == 200 and done.json()["applied"] is True
    assert ConfigVersion.objects.latest().note == "from CI" and ConfigVersion.objects.count() == versions + 1
    assert Pool.objects.get(tenant=world["alpha"]["tenant"], name="web").retries == 4


def test_a_json_body_is_accepted(tokens, world):
    text = exported(world["alpha"]["tenant"], fmt="json")
    response = tokens["editor"].post(APPLY, data=text, content_type="application/json")
    assert response.status_code == 200 and response.json()["changes"] == []


def test_a_viewer_token_is_refused_with_the_change_named(tokens, world):
    data = as_data(exported(world["alpha"]["tenant"]))
    item(data, "pools", "web", "alpha")["retries"] = 4
    response = post(tokens["viewer"], as_text(data))
    assert response.status_code == 400
    assert response.json()["errors"] == [{"path": "pools[0]", "object": "pool alpha/web",
                                          "message": "needs the editor or owner role in tenant alpha"}]


def test_a_tenant_token_cannot_touch_another_tenant(tokens, world):
    data = as_data(exported(world["alpha"]["tenant"]))
    data["pools"].append({**item(data, "pools", "web", "alpha"), "tenant": "beta", "name": "intruder"})
    response = post(tokens["editor"], as_text(data))
    assert response.status_code == 400
    assert [e["object"] for e in response.json()["errors"]] == ["pool beta/intruder"]
    beta_file = as_data(exported(world["beta"]["tenant"]))
    response = post(tokens["editor"], as_text(beta_file))
    assert response.status_code == 400
    assert [e["message"] for e in response.json()["errors"]] == ["there is no tenant beta"]


def test_the_platform_file_is_staffs_only(tokens):
    response = post(tokens["member"], exported(), "?dry_run=1")
    assert response.status_code == 400
    assert {"tenant beta", "pool platform-web", "route beta/api"} <= {e["object"] for e in response.json()["errors"]}
    platform = post(tokens["staff"], exported(), "?dry_run=1&prune=1")
    assert platform.status_code == 200 and platform.json()["changes"] == []


def test_an_anonymous_request_is_refused(world):
    assert APIClient().get(EXPORT).status_code in (401, 403)
    assert APIClient().post(APPLY, data=b"{}", content_type="application/json").status_code in (401, 403)


def test_the_endpoints_are_in_the_openapi_schema(tokens):
    schema = yaml.safe_load(tokens["staff"].get("/api/v1/schema/").content)
    assert "/api/v1/config/export" in schema["paths"] and "/api/v1/config/apply" in schema["paths"]
    apply_op = schema["paths"]["/api/v1/config/apply"]["post"]
    assert {p["name"] for p in apply_op["parameters"]} >= {"dry_run", "prune", "tenant", "X-Change-Note"}
