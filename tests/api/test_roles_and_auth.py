"""Roles (owner, editor, viewer) and authentication (bearer tokens, the session)."""
import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.proxy.models import Pool, Route
from controlplane.tenancy.models import ApiToken, Membership, Tenant
from tests.controlplane.helpers import PUBLIC_IP

from .conftest import client_for

pytestmark = pytest.mark.django_db

BASE = "/api/v1"


def new_pool(name="extra", tenant="alpha"):
    return {"tenant": tenant, "name": name, "targets": [{"host": PUBLIC_IP, "port": 80}]}


def test_it_refuses_every_write_of_a_viewer(world, as_role):
    a = world["a"]
    api = as_role("viewer")
    pools, routes = Pool.objects.count(), list(Route.objects.values())
    assert api.post(f"{BASE}/pools/", new_pool(), format="json").status_code == 403
    assert api.post(f"{BASE}/pools/", {}, format="json").status_code == 403
    assert api.patch(f"{BASE}/routes/{a.route.pk}/", {"path": "/x"}, format="json").status_code == 403
    assert api.delete(f"{BASE}/routes/{a.route.pk}/").status_code == 403
    assert api.delete(f"{BASE}/certificates/{a.certificate.pk}/").status_code == 403
    assert api.patch(f"{BASE}/alert-channels/{a.channel.pk}/", {"name": "x"}, format="json").status_code == 403
    assert api.get(f"{BASE}/routes/{a.route.pk}/").status_code == 200
    assert Pool.objects.count() == pools and list(Route.objects.values()) == routes


def test_it_lets_an_editor_change_routes_but_not_members_or_tokens(world, as_role):
    a = world["a"]
    api = as_role("editor")
    assert api.post(f"{BASE}/pools/", new_pool(), format="json").status_code == 201
    assert api.patch(f"{BASE}/routes/{a.route.pk}/", {"path": "/x"}, format="json").status_code == 200
    tokens, members = ApiToken.objects.count(), list(Membership.objects.values())
    assert api.post(f"{BASE}/api-tokens/", {"tenant": "alpha", "role": "viewer"}, format="json").status_code == 403
    assert api.post(f"{BASE}/members/", {"tenant": "alpha", "user": "beta-owner", "role": "viewer"},
                    format="json").status_code == 403
    assert api.patch(f"{BASE}/members/{a.member.pk}/", {"role": "owner"}, format="json").status_code == 403
    assert api.delete(f"{BASE}/members/{a.member.pk}/").status_code == 403
    assert api.get(f"{BASE}/api-tokens/{a.token.pk}/").status_code == 404  # owners only see tenant tokens
    assert ApiToken.objects.count() == tokens and list(Membership.objects.values()) == members
    assert api.patch(f"{BASE}/tenants/alpha/", {"name": "x"}, format="json").status_code == 403
    assert api.post(f"{BASE}/delegations/", {"tenant": "alpha", "suffix": "alpha.example.org"},
                    format="json").status_code == 403


def test_it_lets_an_owner_manage_members_and_tokens_but_not_quotas(world, as_role):
    api = as_role("owner")
    # an owner adds by username only people they already share a tenant with (others: invitations)
    r = api.post(f"{BASE}/members/", {"tenant": "alpha", "user": "beta-owner", "role": "viewer"}, format="json")
    assert r.status_code == 400 and "invite them by e-mail" in r.json()["user"][0]
    Membership.objects.create(user=world["b"].users["owner"], tenant=world["a"].tenant, role="viewer")
    r = api.post(f"{BASE}/members/", {"tenant": "alpha", "user": "beta-editor", "role": "viewer"}, format="json")
    assert r.status_code == 400
    Membership.objects.create(user=world["a"].users["owner"], tenant=world["b"].tenant, role="viewer")
    r = api.post(f"{BASE}/members/", {"tenant": "alpha", "user": "beta-editor", "role": "viewer"}, format="json")
    assert r.status_code == 201, r.json()
    r = api.post(f"{BASE}/api-tokens/", {"tenant": "alpha", "role": "editor"}, format="json")
    assert r.status_code == 201 and r.json()["tenant"] == "alpha" and r.json()["token"].startswith("sy_")
    assert api.post(f"{BASE}/api-tokens/{world['a'].token.pk}/revoke/").status_code == 200
    assert api.patch(f"{BASE}/tenants/alpha/", {"name": "Alpha Inc"}, format="json").status_code == 200
    r = api.patch(f"{BASE}/tenants/alpha/", {"quotas": {"routes": 1000}}, format="json")
    assert r.status_code == 403 and Tenant.objects.get(slug="alpha").max_routes == 100
    assert api.post(f"{BASE}/tenants/", {"slug": "mine", "name": "Mine"}, format="json").status_code == 403
    assert api.delete(f"{BASE}/tenants/alpha/").status_code == 403
    assert api.post(f"{BASE}/delegations/", {"tenant": "alpha", "suffix": "a.example.org"},
                    format="json").status_code == 403


def test_it_acts_with_the_users_memberships_for_a_user_token(world):
    user = world["a"].users["editor"]
    Membership.objects.create(user=user, tenant=world["b"].tenant, role="viewer")
    api = client_for(user)
    assert {r["tenant"] for r in api.get(f"{BASE}/routes/").json()["results"]} == {"alpha", "beta"}
    assert api.patch(f"{BASE}/routes/{world['a'].route.pk}/", {"priority": 1}, format="json").status_code == 200
    assert api.patch(f"{BASE}/routes/{world['b'].route.pk}/", {"priority": 1}, format="json").status_code == 403


def test_it_acts_as_the_tenant_with_the_role_of_a_tenant_token(world):
    owner = world["a"].users["owner"]
    Membership.objects.create(user=owner, tenant=world["b"].tenant, role="owner")
    viewer_token = client_for(owner, tenant=world["a"].tenant, role="viewer")
    assert {r["tenant"] for r in viewer_token.get(f"{BASE}/routes/").json()["results"]} == {"alpha"}
    assert viewer_token.get(f"{BASE}/routes/{world['b'].route.pk}/").status_code == 404
    assert viewer_token.post(f"{BASE}/pools/", new_pool(), format="json").status_code == 403
    editor_token = client_for(owner, tenant=world["a"].tenant, role="editor")
    assert editor_token.post(f"{BASE}/pools/", new_pool(), format="json").status_code == 201
    assert editor_token.post(f"{BASE}/api-tokens/", {"tenant": "alpha"}, format="json").status_code == 403
    owner_token = client_for(owner, tenant=world["a"].tenant, role="owner")
    r = owner_token.post(f"{BASE}/api-tokens/", {}, format="json")
    assert r.status_code == 201 and r.json()["tenant"] == "alpha"  # a token of the same tenant
    r = owner_token.post(f"{BASE}/api-tokens/", {"tenant": None}, format="json")
    assert r.status_code == 403  # a tenant token cannot mint a token with all the user's powers


def test_it_caps_a_tenant_tokens_role_at_the_users_membership(world):
    viewer = world["a"].users["viewer"]
    api = client_for(viewer, tenant=world["a"].tenant, role="owner")
    assert api.post(f"{BASE}/pools/", new_pool(), format="json").status_code == 403


def test_it_gives_staff_tenant_tokens_only_that_tenant(world):
    api = client_for(world["staff"], tenant=world["a"].tenant, role="editor")
    assert {p["tenant"] for p in api.get(f"{BASE}/pools/").json()["results"]} == {"alpha"}
    assert api.get(f"{BASE}/nodes/").json()["results"] == []


def test_it_refuses_revoked_unknown_and_missing_tokens_with_401(world):
    api = client_for(world["staff"])
    assert api.get(f"{BASE}/routes/").status_code == 200
    ApiToken.objects.filter(pk=api.token.pk).update(revoked=timezone.now())
    r = api.get(f"{BASE}/routes/")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    bogus = APIClient()
    bogus.credentials(HTTP_AUTHORIZATION="Bearer sy_nope")
    assert bogus.get(f"{BASE}/routes/").status_code == 401
    assert APIClient().get(f"{BASE}/routes/").status_code == 401
    inactive = client_for(world["a"].users["owner"])
    world["a"].users["owner"].is_active = False
    world["a"].users["owner"].save()
    assert inactive.get(f"{BASE}/routes/").status_code == 401


def test_it_updates_last_used_at_most_once_a_minute(world):
    api = client_for(world["staff"])
    api.get(f"{BASE}/tenants/")
    first = ApiToken.objects.get(pk=api.token.pk).last_used
    assert first is not None
    api.get(f"{BASE}/tenants/")
    assert ApiToken.objects.get(pk=api.token.pk).last_used == first
    ApiToken.objects.filter(pk=api.token.pk).update(last_used=first - dt.timedelta(minutes=2))
    api.get(f"{BASE}/tenants/")
    assert ApiToken.objects.get(pk=api.token.pk).last_used > first - dt.timedelta(minutes=1)


def test_it_accepts_the_dashboard_session_with_csrf(world):
    api = APIClient(enforce_csrf_checks=True)
    api.force_login(world["a"].users["editor"])
    assert {p["tenant"] for p in api.get(f"{BASE}/pools/").json()["results"]} == {"alpha"}
    assert api.post(f"{BASE}/pools/", new_pool(), format="json").status_code == 403  # no CSRF token
    assert not Pool.objects.filter(name="extra").exists()
    api.get("/admin/login/")  # sets the csrftoken cookie
    token = api.cookies["csrftoken"].value
    r = api.post(f"{BASE}/pools/", new_pool(), format="json", HTTP_X_CSRFTOKEN=token)
    assert r.status_code == 201, r.content
