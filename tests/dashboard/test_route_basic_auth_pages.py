"""The route form's "Basic auth" fieldset (realm and user rows, as on the access-list
page: passwords never rendered back, one hash from preview to publish) and the route
page's "basic auth" line."""
from __future__ import annotations

import pytest
from django.urls import reverse

from controlplane.proxy.models import Route
from dataplane import basicauth, schema

from .test_basic_auth_pages import preview_and_publish
from .test_forms import errors_of, route_post

pytestmark = pytest.mark.django_db


def verifies(route: Route, username: str, password: str) -> bool:
    user = next(u for u in route.basic_auth["users"] if u["username"] == username)
    return basicauth.check_password(password.encode(), schema.parse_password_hash(user["password_hash"]))


def test_the_route_form_sets_keeps_and_removes_basic_auth_users(world, login):
    route = world["objs"]["shop"]["route"]
    c = login(world["users"]["shop-editor"])
    edit = reverse("dashboard:route_edit", args=[route.pk])
    page = c.get(edit).content.decode()
    assert 'id="basic-auth-users"' in page and 'name="basic_auth_realm"' in page
    base = route_post(world, name=route.name, hosts="\n".join(route.hosts))
    html, resp = preview_and_publish(c, edit, {
        **base, "basic_auth_realm": "Shop staff",
        "users-0-username": "alice", "users-0-password": "correct horse",
        "users-1-username": "bob", "users-1-password": "battery staple"})
    assert "correct horse" not in html and "battery staple" not in html and "New password set" in html
    assert resp.status_code == 302, errors_of(resp.content.decode())
    route.refresh_from_db()
    assert route.basic_auth["realm"] == "Shop staff"
    assert verifies(route, "alice", "correct horse") and verifies(route, "bob", "battery staple")
    alice_hash = route.basic_auth["users"][0]["password_hash"]

    # the route page says so; the edit page shows usernames, never a hash or password
    detail = c.get(reverse("dashboard:route", args=[route.pk])).content.decode()
    assert "2 users" in detail and "Shop staff" in detail
    page = c.get(edit).content.decode()
    assert 'value="alice"' in page and 'value="Shop staff"' in page and "pbkdf2" not in page

    # keep alice (empty password), remove bob
    _, resp = preview_and_publish(c, edit, {
        **base, "basic_auth_realm": "", "users-0-username": "alice", "users-0-password": "",
        "users-1-username": "bob", "users-1-remove": "on"})
    assert resp.status_code == 302, errors_of(resp.content.decode())
    route.refresh_from_db()
    assert route.basic_auth == {"realm": "", "users": [{"username": "alice", "password_hash": alice_hash}]}

    # no user left: basic auth is off
    _, resp = preview_and_publish(c, edit, {**base, "users-0-username": "alice", "users-0-remove": "on"})
    assert resp.status_code == 302
    route.refresh_from_db()
    assert route.basic_auth is None
    assert 'id="route-own-basic-auth">off' in c.get(reverse("dashboard:route", args=[route.pk])).content.decode()


def test_the_route_form_names_basic_auth_problems(world, login):
    route = world["objs"]["shop"]["route"]
    c = login(world["users"]["shop-editor"])
    edit = reverse("dashboard:route_edit", args=[route.pk])
    base = route_post(world, name=route.name, hosts="\n".join(route.hosts))
    html = c.post(edit, {**base, "users-0-username": "dave", "users-0-password": "", "_action": "preview"}
                  ).content.decode()
    assert "dave: a new user needs a password" in html and 'id="publish-button"' not in html
    html = c.post(edit, {**base, "basic_auth_realm": "caf\u00e9", "users-0-username": "eve",
                         "users-0-password": "pw", "_action": "preview"}).content.decode()
    assert 'id="publish-button"' not in html and "printable ASCII" in html
    route.refresh_from_db()
    assert route.basic_auth is None
