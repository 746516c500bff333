"""Optimistic concurrency on the edit pages: a form carries the version it showed; a
save over someone else's newer version is refused with the form shown again (the
user's values kept, the differing fields named), and saving that form again
overwrites deliberately."""
from __future__ import annotations

import html
import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from controlplane.alerts.models import AlertChannel
from controlplane.proxy.models import Certificate, Route
from controlplane.tenancy.models import Tenant
from tests.controlplane import helpers as h

from .test_forms import route_post

pytestmark = pytest.mark.django_db

CONFLICT = "Someone else changed this"


def etag_in(response) -> str:
    found = re.search(r'name="etag" value="([^"]*)" id="id_etag"', response.content.decode())
    assert found, "no etag field on the page"
    return html.unescape(found.group(1))


def digest_in(response) -> str:
    return re.search(r'name="digest" value="([0-9a-f]+)"', response.content.decode()).group(1)


def publish(c, url, data):
    """Preview, then confirm with the preview's digest (what a person does with two clicks)."""
    preview = c.post(url, {**data, "_action": "preview"})
    if CONFLICT in preview.content.decode():
        return preview
    return c.post(url, {**data, "_action": "publish", "digest": digest_in(preview)})


def client_for(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def two_editors(world):
    User = get_user_model()
    other = User.objects.create_user("shop-editor-2")
    world["shop"].memberships.create(user=other, role="editor")
    return client_for(world["users"]["shop-editor"]), client_for(other)


def test_a_route_save_over_a_newer_version_is_refused_then_overwrites_when_repeated(world, two_editors):
    alice, bob = two_editors
    route = world["objs"]["shop"]["route"]
    url = reverse("dashboard:route_edit", args=[route.pk])
    base = {"name": route.name, "hosts": "\n".join(route.hosts), "path": route.path}
    alice_etag, bob_etag = etag_in(alice.get(url)), etag_in(bob.get(url))

    saved = publish(alice, url, route_post(world, **base, priority="5", etag=alice_etag))
    assert saved.status_code == 302
    conflict = publish(bob, url, route_post(world, **{**base, "name": "bobs-api"}, etag=bob_etag))

    page = conflict.content.decode()
    assert conflict.status_code == 200 and CONFLICT + " route while you were editing it" in page
    assert "priority" in page.split(CONFLICT, 1)[1].split("</li>", 1)[0]
    assert 'value="bobs-api"' in page  # bob's input is kept
    route.refresh_from_db()
    assert (route.name, route.priority) == (base["name"], 5)
    assert etag_in(conflict) not in (bob_etag, "")

    again = publish(bob, url, route_post(world, **{**base, "name": "bobs-api"}, etag=etag_in(conflict)))
    assert again.status_code == 302
    route.refresh_from_db()
    assert (route.name, route.priority) == ("bobs-api", 0)


def test_a_route_delete_confirmed_over_a_newer_version_is_refused(world, two_editors):
    alice, bob = two_editors
    route = world["objs"]["shop"]["route"]
    edit, delete = reverse("dashboard:route_edit", args=[route.pk]), reverse("dashboard:route_delete", args=[route.pk])
    shown = bob.get(delete)
    base = {"name": route.name, "hosts": "\n".join(route.hosts), "path": route.path}
    alice_etag = etag_in(alice.get(edit))
    assert publish(alice, edit, route_post(world, **base, priority="7", etag=alice_etag)).status_code == 302

    refused = bob.post(delete, {"etag": etag_in(shown), "digest": digest_in(bob.get(delete))})
    assert refused.status_code == 200 and CONFLICT + " route" in refused.content.decode()
    assert Route.objects.filter(pk=route.pk).exists()
    assert bob.post(delete, {"etag": etag_in(refused), "digest": digest_in(refused)}).status_code == 302
    assert not Route.objects.filter(pk=route.pk).exists()


def tenant_post(tenant, **overrides):
    data = {"name": tenant.name, "max_routes": tenant.max_routes, "max_pools": tenant.max_pools,
            "max_targets": tenant.max_targets, "max_certificates": tenant.max_certificates, "allowed_networks": ""}
    return {**data, **overrides}


def test_a_tenant_save_over_a_newer_version_is_refused_then_overwrites_when_repeated(world):
    User = get_user_model()
    alice = client_for(world["users"]["staff"])
    bob = client_for(User.objects.create_user("staff-2", is_staff=True))
    tenant = world["shop"]
    page_url, save_url = reverse("dashboard:tenant", args=["shop"]), reverse("dashboard:tenant_update", args=["shop"])
    alice_etag, bob_etag = etag_in(alice.get(page_url)), etag_in(bob.get(page_url))

    assert alice.post(save_url, tenant_post(tenant, max_routes=77, etag=alice_etag)).status_code == 302
    conflict = bob.post(save_url, tenant_post(tenant, name="Bob's shop", etag=bob_etag))
    page = conflict.content.decode()
    assert conflict.status_code == 200 and CONFLICT + " tenant" in page and "max_routes" in page
    tenant.refresh_from_db()
    assert (tenant.name, tenant.max_routes) != ("Bob's shop", tenant.max_routes) and tenant.max_routes == 77

    assert bob.post(save_url, tenant_post(tenant, name="Bob's shop", max_routes=3,
                                          etag=etag_in(conflict))).status_code == 302
    tenant = Tenant.objects.get(pk=tenant.pk)
    assert (tenant.name, tenant.max_routes) == ("Bob's shop", 3)


def channel_post(channel, **overrides):
    return {"tenant": str(channel.tenant_id), "name": channel.name, "kind": channel.kind,
            "emails": "\n".join(channel.emails), "url": "", "enabled": "on", **overrides}


def test_an_alert_channel_save_over_a_newer_version_is_refused(world, two_editors):
    alice, bob = two_editors
    channel = world["objs"]["shop"]["channel"]
    url = reverse("dashboard:channel_edit", args=[channel.pk])
    alice_etag, bob_etag = etag_in(alice.get(url)), etag_in(bob.get(url))

    assert alice.post(url, channel_post(channel, emails="alice@shop.example.com", etag=alice_etag)).status_code == 302
    conflict = bob.post(url, channel_post(channel, name="bob-mail", etag=bob_etag))
    assert conflict.status_code == 200 and CONFLICT + " alert channel" in conflict.content.decode()
    channel.refresh_from_db()
    assert (channel.name, channel.emails) == ("shop-mail", ["alice@shop.example.com"])

    assert bob.post(url, channel_post(channel, name="bob-mail", etag=etag_in(conflict))).status_code == 302
    assert AlertChannel.objects.get(pk=channel.pk).name == "bob-mail"


def test_a_certificate_rename_over_a_newer_version_is_refused(world, two_editors):
    alice, bob = two_editors
    cert = world["objs"]["shop"]["cert"]
    url = reverse("dashboard:certificate_edit", args=[cert.pk])
    alice_etag, bob_etag = etag_in(alice.get(url)), etag_in(bob.get(url))

    assert alice.post(url, {"name": "alice-cert", "etag": alice_etag}).status_code == 302
    conflict = bob.post(url, {"name": "bob-cert", "etag": bob_etag})
    assert conflict.status_code == 200 and CONFLICT + " certificate" in conflict.content.decode()
    assert Certificate.objects.get(pk=cert.pk).name == "alice-cert"

    assert bob.post(url, {"name": "bob-cert", "etag": etag_in(conflict)}).status_code == 302
    assert Certificate.objects.get(pk=cert.pk).name == "bob-cert"


def test_a_certificate_is_renewed_in_place_from_the_dashboard(world, login):
    c = login(world["users"]["shop-editor"])
    cert = world["objs"]["shop"]["cert"]
    renewed_pem, key_pem = h.issue(*cert.sans)
    old_fingerprint = cert.fingerprint
    url = reverse("dashboard:certificate_edit", args=[cert.pk])
    response = c.post(url, {"name": cert.name, "certificate_pem": renewed_pem, "private_key_pem": key_pem,
                            "etag": etag_in(c.get(url))})
    assert response.status_code == 302, response.content.decode()[:2000]
    cert.refresh_from_db()
    assert cert.fingerprint != old_fingerprint
