"""Platform staff manage users in the dashboard and through /api/v1/users/: list with
memberships, create, deactivate (sessions and API tokens stop working), delete, and a
password reset link by e-mail that sets a new password."""
import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from controlplane.audit.models import AuditEntry
from controlplane.tenancy.models import ApiToken
from tests.api.conftest import client_for
from tests.support import wait_until

pytestmark = pytest.mark.django_db
BASE = "/api/v1"
User = get_user_model()


def test_staff_list_users_with_their_memberships(world, staff_api):
    r = staff_api.get(f"{BASE}/users/?limit=100")
    assert r.status_code == 200
    rows = {u["username"]: u for u in r.json()["results"]}
    assert rows["alpha-owner"]["memberships"] == [{"tenant": "alpha", "role": "owner"}]
    assert rows["operator"]["is_staff"] is True and "password" not in rows["operator"]


def test_tenant_members_see_no_users(world):
    api = client_for(world["a"].users["owner"])
    assert api.get(f"{BASE}/users/").json()["results"] == []
    assert api.get(f"{BASE}/users/{world['a'].users['viewer'].pk}/").status_code == 404
    assert api.post(f"{BASE}/users/", {"username": "mallory"}, format="json").status_code == 403
    assert not User.objects.filter(username="mallory").exists()


def test_staff_create_a_user_who_then_signs_in(world, staff_api):
    r = staff_api.post(f"{BASE}/users/", {"username": "carol", "email": "carol@example.com",
                                          "password": "a long enough password"}, format="json")
    assert r.status_code == 201, r.json()
    assert r.json()["is_active"] is True and "password" not in r.json()
    assert Client().login(username="carol", password="a long enough password")
    r = staff_api.post(f"{BASE}/users/", {"username": "carol"}, format="json")
    assert r.status_code == 400 and "username" in r.json()
    assert AuditEntry.objects.filter(object_type="user", action="create", object_repr="carol").count() == 1


def test_a_deactivated_user_loses_api_tokens_and_session(world, staff_api):
    owner = world["a"].users["owner"]
    owner.set_password("pw-of-the-owner-1")
    owner.save()
    owner_api = client_for(owner)
    browser = Client()
    assert browser.login(username="alpha-owner", password="pw-of-the-owner-1")
    assert browser.get(reverse("dashboard:routes")).status_code == 200
    assert owner_api.get(f"{BASE}/routes/").status_code == 200
    r = staff_api.patch(f"{BASE}/users/{owner.pk}/", {"is_active": False}, format="json")
    assert r.status_code == 200 and r.json()["is_active"] is False
    assert owner_api.get(f"{BASE}/routes/").status_code == 401
    assert browser.get(reverse("dashboard:routes")).status_code == 302  # back to the sign-in page
    assert not Client().login(username="alpha-owner", password="pw-of-the-owner-1")
    assert AuditEntry.objects.filter(object_type="user", action="deactivate").exists()
    staff_api.patch(f"{BASE}/users/{owner.pk}/", {"is_active": True}, format="json")
    assert owner_api.get(f"{BASE}/routes/").status_code == 200


def test_a_tenant_token_stops_working_when_its_user_loses_the_membership(world):
    a = world["a"]
    row, plain = ApiToken.issue(a.users["editor"], tenant=a.tenant, role="editor")
    api = client_for()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    assert api.get(f"{BASE}/routes/").status_code == 200
    owner = client_for(a.users["owner"])
    member = a.users["editor"].memberships.get(tenant=a.tenant)
    assert owner.delete(f"{BASE}/members/{member.pk}/").status_code == 204
    assert api.get(f"{BASE}/routes/").status_code == 401
    row.refresh_from_db()
    assert row.revoked is not None  # shown as revoked on the tenant page


def test_staff_cannot_deactivate_or_delete_themselves(world, staff_api):
    me = world["staff"]
    r = staff_api.patch(f"{BASE}/users/{me.pk}/", {"is_active": False}, format="json")
    assert r.status_code == 400 and "is_active" in r.json()
    assert staff_api.delete(f"{BASE}/users/{me.pk}/").status_code == 400
    me.refresh_from_db()
    assert me.is_active


def test_staff_delete_a_user(world, staff_api):
    viewer = world["b"].users["viewer"]
    assert staff_api.delete(f"{BASE}/users/{viewer.pk}/").status_code == 204
    assert not User.objects.filter(pk=viewer.pk).exists()
    entry = AuditEntry.objects.get(object_type="user", action="delete")
    assert entry.before["memberships"] == ["beta:viewer"]


def test_a_password_reset_link_arrives_by_email_and_sets_the_password(world, staff_api, smtp_server):
    user = world["b"].users["editor"]
    user.email = "beta-editor@example.com"
    user.save()
    r = staff_api.post(f"{BASE}/users/{user.pk}/reset-password/")
    assert r.status_code == 200 and r.json()["sent"] is True, r.json()
    wait_until(lambda: smtp_server.messages, 30, "the reset e-mail")
    message = smtp_server.messages[0]
    assert message["to"] == ["beta-editor@example.com"]
    link = re.search(r"http://testserver(/reset/\S+/)", message["body"]).group(1)
    browser = Client()
    page = browser.get(link, follow=True)
    assert page.status_code == 200 and b"Set a password" in page.content
    done = browser.post(page.redirect_chain[-1][0], {"new_password1": "brand new secret 42",
                                                     "new_password2": "brand new secret 42"})
    assert done.status_code == 302 and done.url == reverse("dashboard:password_reset_done")
    assert Client().login(username="beta-editor", password="brand new secret 42")
    again = Client().get(link, follow=True)
    assert b"no longer valid" in again.content  # the link works once


def test_the_users_page_lists_creates_and_deactivates(world, client):
    client.force_login(world["staff"])
    page = client.get(reverse("dashboard:users")).content.decode()
    assert "alpha-owner" in page and 'href="/users/"' in page
    r = client.post(reverse("dashboard:users"), {"username": "dave", "email": "dave@example.com"})
    dave = User.objects.get(username="dave")
    assert r.status_code == 302 and r.url == reverse("dashboard:user", args=[dave.pk])
    assert not dave.has_usable_password()
    r = client.post(reverse("dashboard:user_active", args=[dave.pk]), {"active": "0"})
    dave.refresh_from_db()
    assert not dave.is_active
    detail = client.get(reverse("dashboard:user", args=[dave.pk])).content.decode()
    assert "deactivated" in detail


def test_members_get_no_users_page_nor_nav_entry(world, client):
    client.force_login(world["a"].users["owner"])
    assert client.get(reverse("dashboard:users")).status_code == 404
    assert 'href="/users/"' not in client.get(reverse("dashboard:overview")).content.decode()
