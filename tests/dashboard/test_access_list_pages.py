"""The Access lists page: list, new (preview → publish), edit, delete; attaching one
from the route form; tenant isolation; the service's own messages on the form."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse

from controlplane.audit.models import AuditEntry
from controlplane.proxy import services
from controlplane.proxy.models import AccessList, Route
from controlplane.publishing.models import ConfigVersion
from tests.controlplane import helpers as h

from .test_forms import errors_of, route_post

pytestmark = pytest.mark.django_db


def publish(client, url, data):
    html = client.post(url, {**data, "_action": "preview"}).content.decode()
    digest = re.search(r'name="digest" value="([0-9a-f]{64})"', html)
    assert digest, errors_of(html) or html[:3000]
    return client.post(url, {**data, "_action": "publish", "digest": digest.group(1), "note": "office only"})


def test_an_editor_creates_a_list_and_attaches_it_from_the_route_form(world, login):
    c = login(world["users"]["shop-editor"])
    resp = publish(c, reverse("dashboard:access_list_new"), {
        "tenant": str(world["shop"].pk), "name": "office", "default": "deny",
        "rules": "allow 192.0.2.0/24\ndeny 2001:DB8::/32  # the lab"})
    assert resp.status_code == 302
    acl = AccessList.objects.get(name="office")
    assert acl.tenant == world["shop"] and acl.default == "deny"
    assert acl.rules == [{"action": "allow", "cidr": "192.0.2.0/24"}, {"action": "deny", "cidr": "2001:db8::/32"}]
    assert AuditEntry.objects.filter(object_type="accesslist", object_id=str(acl.pk), note="office only").exists()
    listing = c.get(reverse("dashboard:access_lists")).content.decode()
    assert "office" in listing and "allow 192.0.2.0/24" in listing

    route = world["objs"]["shop"]["route"]
    form = c.get(reverse("dashboard:route_edit", args=[route.pk])).content.decode()
    assert f'<option value="{acl.pk}">shop/office</option>' in form
    data = route_post(world, name=route.name, hosts="\n".join(route.hosts), access_list=str(acl.pk),
                      maintenance="on", retry_after="60")
    assert publish(c, reverse("dashboard:route_edit", args=[route.pk]), data).status_code == 302
    route.refresh_from_db()
    assert (route.access_list_id, route.maintenance, route.retry_after) == (acl.pk, True, 60)
    snap = ConfigVersion.objects.latest("number").snapshot
    assert [a["name"] for a in snap["access_lists"]] == ["office"]
    detail = c.get(reverse("dashboard:route", args=[route.pk])).content.decode()
    assert "office" in detail and "Retry-After 60 s" in detail


def test_the_form_shows_the_services_messages(world, login):
    c = login(world["users"]["shop-editor"])
    html = c.post(reverse("dashboard:access_list_new"), {
        "tenant": str(world["shop"].pk), "name": "office", "default": "deny",
        "rules": "allow 192.0.2.0/24\npermit 10.0.0.0/8\ndeny 10.0.0.300", "_action": "preview"}).content.decode()
    assert errors_of(html)["rules"] == ["rule 2: action must be allow or deny",
                                        "rule 3: '10.0.0.300' is not an IPv4 or IPv6 address or network"]
    assert not AccessList.objects.exists()


def test_another_tenants_list_is_neither_shown_nor_offered(world, login):
    theirs = services.create_access_list(h.ACTOR, tenant=world["acme"], name="acme-office", rules=[])
    c = login(world["users"]["shop-owner"])
    assert "acme-office" not in c.get(reverse("dashboard:access_lists")).content.decode()
    assert c.get(reverse("dashboard:access_list", args=[theirs.pk])).status_code == 404
    assert c.get(reverse("dashboard:access_list_delete", args=[theirs.pk])).status_code == 404
    route = world["objs"]["shop"]["route"]
    assert "acme-office" not in c.get(reverse("dashboard:route_edit", args=[route.pk])).content.decode()
    html = c.post(reverse("dashboard:route_edit", args=[route.pk]),
                  route_post(world, name=route.name, hosts="\n".join(route.hosts), access_list=str(theirs.pk),
                             _action="preview")).content.decode()
    assert "access_list" in errors_of(html)
    assert Route.objects.get(pk=route.pk).access_list_id is None


def test_a_viewer_cannot_edit_and_a_list_in_use_is_kept(world, login):
    acl = services.create_access_list(h.ACTOR, tenant=world["shop"], name="office", rules=[])
    services.update_route(h.ACTOR, world["objs"]["shop"]["route"], access_list=acl)
    viewer = login(world["users"]["shop-viewer"])
    assert "office" in viewer.get(reverse("dashboard:access_lists")).content.decode()
    assert viewer.get(reverse("dashboard:access_list", args=[acl.pk])).status_code == 403
    editor = login(world["users"]["shop-editor"])
    html = editor.get(reverse("dashboard:access_list_delete", args=[acl.pk])).content.decode()
    assert "is used by routes shop-api" in html
    assert AccessList.objects.filter(pk=acl.pk).exists()
