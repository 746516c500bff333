"""Basic-auth users on the access-list page (add, keep, change, remove; passwords never
rendered back, one hash from preview to publish), the route's forward_authorization box,
and the one-step "New proxy host" form's access list."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse

from controlplane.proxy import services
from controlplane.proxy.models import AccessList, Route
from controlplane.publishing.models import ConfigVersion
from dataplane import basicauth, schema
from tests.controlplane import helpers as h

from .test_forms import errors_of

pytestmark = pytest.mark.django_db


def preview_and_publish(client, url, data):
    html = client.post(url, {**data, "_action": "preview"}).content.decode()
    digest = re.search(r'name="digest" value="([0-9a-f]{64})"', html)
    assert digest, errors_of(html) or html[:3000]
    # the publish post carries what the preview page holds: the hash, never the password
    hashes = dict(re.findall(r'name="(users-\d+-hash)" value="([^"]+)"', html))
    carried = {k: v for k, v in data.items() if not k.endswith("-password")}
    return html, client.post(url, {**carried, **hashes, "_action": "publish", "digest": digest.group(1),
                                   "note": "basic auth"})


def verifies(acl: AccessList, username: str, password: str) -> bool:
    user = next(u for u in acl.users if u["username"] == username)
    return basicauth.check_password(password.encode(), schema.parse_password_hash(user["password_hash"]))


def test_users_are_added_kept_changed_and_removed_without_showing_a_password(world, login):
    c = login(world["users"]["shop-editor"])
    url = reverse("dashboard:access_list_new")
    html, resp = preview_and_publish(c, url, {
        "tenant": str(world["shop"].pk), "name": "staff", "default": "allow", "rules": "", "satisfy": "all",
        "users-0-username": "alice", "users-0-password": "correct horse",
        "users-1-username": "bob", "users-1-password": "battery staple"})
    assert "correct horse" not in html and "battery staple" not in html
    assert "New password set" in html
    assert resp.status_code == 302, errors_of(resp.content.decode())
    acl = AccessList.objects.get(name="staff")
    assert [u["username"] for u in acl.users] == ["alice", "bob"]
    assert verifies(acl, "alice", "correct horse") and verifies(acl, "bob", "battery staple")
    alice_hash = acl.users[0]["password_hash"]

    # the edit page lists the users with empty password boxes; nothing secret in it
    edit = reverse("dashboard:access_list", args=[acl.pk])
    page = c.get(edit).content.decode()
    assert 'value="alice"' in page and 'value="bob"' in page and "pbkdf2" not in page
    assert 'type="password"' in page and "correct horse" not in page

    # keep alice (empty password), change bob's password, remove nobody, add carol
    _, resp = preview_and_publish(c, edit, {
        "tenant": str(world["shop"].pk), "name": "staff", "default": "allow", "rules": "", "satisfy": "any",
        "users-0-username": "alice", "users-0-password": "",
        "users-1-username": "bob", "users-1-password": "new bob",
        "users-2-username": "carol", "users-2-password": "carol pw", "users-3-username": ""})
    assert resp.status_code == 302, errors_of(resp.content.decode())
    acl.refresh_from_db()
    assert acl.satisfy == "any" and [u["username"] for u in acl.users] == ["alice", "bob", "carol"]
    assert acl.users[0]["password_hash"] == alice_hash
    assert verifies(acl, "bob", "new bob") and verifies(acl, "carol", "carol pw")

    # remove bob
    _, resp = preview_and_publish(c, edit, {
        "tenant": str(world["shop"].pk), "name": "staff", "default": "allow", "rules": "", "satisfy": "any",
        "users-0-username": "alice", "users-1-username": "bob", "users-1-remove": "on",
        "users-2-username": "carol"})
    assert resp.status_code == 302
    acl.refresh_from_db()
    assert [u["username"] for u in acl.users] == ["alice", "carol"]
    listing = c.get(reverse("dashboard:access_lists")).content.decode()
    assert "2 users" in listing


def test_a_new_user_without_a_password_is_refused_on_the_form(world, login):
    c = login(world["users"]["shop-editor"])
    html = c.post(reverse("dashboard:access_list_new"), {
        "tenant": str(world["shop"].pk), "name": "staff", "default": "allow", "rules": "",
        "users-0-username": "dave", "users-0-password": "", "_action": "preview"}).content.decode()
    assert "dave: a new user needs a password" in html and 'id="publish-button"' not in html
    assert not AccessList.objects.filter(name="staff").exists()


def test_the_route_form_sets_forward_authorization(world, login):
    from .test_forms import route_post
    acl = services.create_access_list(h.ACTOR, tenant=world["shop"], name="staff",
                                      users=[{"username": "alice", "password": "pw"}])
    route = world["objs"]["shop"]["route"]
    c = login(world["users"]["shop-editor"])
    assert "Forward the Authorization header" in c.get(reverse("dashboard:route_edit", args=[route.pk])).content.decode()
    data = route_post(world, name=route.name, hosts="\n".join(route.hosts), access_list=str(acl.pk),
                      forward_authorization="on")
    html = c.post(reverse("dashboard:route_edit", args=[route.pk]), {**data, "_action": "preview"}).content.decode()
    digest = re.search(r'name="digest" value="([0-9a-f]{64})"', html).group(1)
    c.post(reverse("dashboard:route_edit", args=[route.pk]), {**data, "_action": "publish", "digest": digest})
    route.refresh_from_db()
    assert route.access_list_id == acl.pk and route.forward_authorization


def test_the_proxy_host_form_attaches_one_of_the_owners_access_lists(world, login):
    acl = services.create_access_list(h.ACTOR, tenant=world["shop"], name="staff",
                                      users=[{"username": "alice", "password": "pw"}])
    c = login(world["users"]["shop-editor"])
    url = reverse("dashboard:proxy_host_new")
    page = c.get(url).content.decode()
    assert f'<option value="{acl.pk}">shop/staff — basic auth</option>' in page
    data = {"tenant": str(world["shop"].pk), "hosts": "locked.shop.example.com",
            "upstreams": f"http://{h.PUBLIC_IP}:8080", "tls": "", "name": "", "note": "",
            "access_list": str(acl.pk)}
    html = c.post(url, {**data, "_action": "preview"}).content.decode()
    digest = re.search(r'name="digest" value="([0-9a-f]{64})"', html)
    assert digest, errors_of(html)
    resp = c.post(url, {**data, "_action": "publish", "digest": digest.group(1)})
    assert resp.status_code == 302
    route = Route.objects.get(name="locked.shop.example.com")
    assert route.access_list_id == acl.pk
    snap = ConfigVersion.objects.latest("number").snapshot
    assert [r["access_list"] for r in snap["routes"] if r["id"] == route.pk] == [acl.pk]
    assert [a["name"] for a in snap["access_lists"]] == ["staff"]


def test_the_proxy_host_form_refuses_another_tenants_list(world, login):
    acl = services.create_access_list(h.ACTOR, tenant=world["acme"], name="theirs")  # another tenant
    c = login(world["users"]["shop-editor"])
    assert "acme/theirs" not in c.get(reverse("dashboard:proxy_host_new")).content.decode()
    html = c.post(reverse("dashboard:proxy_host_new"), {
        "tenant": str(world["shop"].pk), "hosts": "x.shop.example.com", "upstreams": f"http://{h.PUBLIC_IP}:8080",
        "tls": "", "access_list": str(acl.pk), "_action": "preview"}).content.decode()
    assert 'id="publish-button"' not in html and errors_of(html)["access_list"]
    assert not Route.objects.filter(name="x.shop.example.com").exists()
