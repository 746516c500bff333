"""The dashboard writes members and tokens through the same services as the API: the
audit trail reads the same whichever UI made the change, and the dashboard refuses
what the API refuses."""
from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from controlplane.audit.models import AuditEntry
from controlplane.tenancy.models import ApiToken, Membership

pytestmark = pytest.mark.django_db

API = "/api/v1"


@pytest.fixture
def api(world):
    client = APIClient()
    client.force_authenticate(world["users"]["shop-owner"])
    return client


def shape(entry: AuditEntry) -> dict:
    """What an audit record says, without the values that differ between two runs."""
    return {"action": entry.action, "object_type": entry.object_type, "tenant": entry.tenant_id,
            "before": sorted(entry.before or {}), "after": sorted(entry.after or {})}


def last_entry(object_type: str) -> AuditEntry:
    return AuditEntry.objects.filter(object_type=object_type).order_by("-id").first()


def member_shapes_via_api(api, username) -> list[dict]:
    r = api.post(f"{API}/members/", {"tenant": "shop", "user": username, "role": "viewer"}, format="json")
    assert r.status_code == 201, r.content
    shapes = [shape(last_entry("membership"))]
    assert api.patch(f"{API}/members/{r.data['id']}/", {"role": "editor"}, format="json").status_code == 200
    shapes.append(shape(last_entry("membership")))
    assert api.delete(f"{API}/members/{r.data['id']}/").status_code == 204
    return shapes + [shape(last_entry("membership"))]


def member_shapes_via_dashboard(c, username) -> list[dict]:
    assert c.post(reverse("dashboard:member_add", args=["shop"]),
                  {"username": username, "role": "viewer"}).status_code == 302
    shapes = [shape(last_entry("membership"))]
    member = Membership.objects.get(user__username=username, tenant__slug="shop")
    assert c.post(reverse("dashboard:member_change", args=["shop", member.pk]), {"role": "editor"}).status_code == 302
    member.refresh_from_db()
    assert member.role == "editor"
    shapes.append(shape(last_entry("membership")))
    assert c.post(reverse("dashboard:member_remove", args=["shop", member.pk])).status_code == 302
    assert not Membership.objects.filter(pk=member.pk).exists()
    return shapes + [shape(last_entry("membership"))]


def test_member_changes_are_audited_alike_from_the_dashboard_and_the_api(world, login, api):
    # the owner adds by username someone they share a tenant with (anyone else is invited by e-mail)
    Membership.objects.create(user=world["users"]["shop-owner"], tenant=world["acme"], role="viewer")
    via_api = member_shapes_via_api(api, "acme-viewer")
    via_dashboard = member_shapes_via_dashboard(login(world["users"]["shop-owner"]), "acme-editor")
    assert [s["action"] for s in via_api] == ["create", "update", "delete"]
    assert via_dashboard == via_api


def token_shapes_via_api(api) -> list[dict]:
    r = api.post(f"{API}/api-tokens/", {"tenant": "shop", "role": "viewer", "name": "ci"}, format="json")
    assert r.status_code == 201, r.content
    shapes = [shape(last_entry("apitoken"))]
    assert api.post(f"{API}/api-tokens/{r.data['id']}/revoke/").status_code == 200
    return shapes + [shape(last_entry("apitoken"))]


def token_shapes_via_dashboard(c) -> list[dict]:
    assert c.post(reverse("dashboard:token_issue", args=["shop"]), {"role": "viewer", "name": "ci"}).status_code == 302
    shapes = [shape(last_entry("apitoken"))]
    token = ApiToken.objects.filter(tenant__slug="shop").order_by("-id").first()
    assert c.post(reverse("dashboard:token_revoke", args=["shop", token.pk])).status_code == 302
    token.refresh_from_db()
    assert token.revoked is not None
    return shapes + [shape(last_entry("apitoken"))]


def test_token_issue_and_revoke_are_audited_alike_from_the_dashboard_and_the_api(world, login, api):
    via_api = token_shapes_via_api(api)
    via_dashboard = token_shapes_via_dashboard(login(world["users"]["shop-owner"]))
    assert [s["action"] for s in via_api] == ["issue", "revoke"]
    assert via_dashboard == via_api
    issued = AuditEntry.objects.filter(object_type="apitoken", action="issue").order_by("-id").first()
    assert issued.tenant_id == world["shop"].pk and issued.after["prefix"]


def test_a_duplicate_member_is_refused_with_a_message_as_the_api_does(world, login, api):
    viewer = world["users"]["shop-viewer"]
    r = api.post(f"{API}/members/", {"tenant": "shop", "user": "shop-viewer", "role": "owner"}, format="json")
    assert r.status_code == 400
    c = login(world["users"]["shop-owner"])
    response = c.post(reverse("dashboard:member_add", args=["shop"]), {"username": "shop-viewer", "role": "owner"})
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-field-errors="username"' in page
    assert "shop-viewer is already a member of tenant shop" in page
    assert Membership.objects.get(user=viewer, tenant=world["shop"]).role == "viewer"
    assert not AuditEntry.objects.filter(object_type="membership").exists()
