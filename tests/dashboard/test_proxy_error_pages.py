"""The proxy's error pages in the dashboard: a route's own (its editors, preview →
publish), the platform defaults (staff only, one version for the lot), the sandboxed
preview frame, and tenant isolation."""
from __future__ import annotations

import html
import re

import pytest
from django.urls import reverse

from controlplane.audit.models import AuditEntry
from controlplane.proxy.models import ErrorPage, Route
from controlplane.publishing.models import ConfigVersion

from .test_access_list_pages import publish
from .test_forms import errors_of

pytestmark = pytest.mark.django_db

PAGE = "<h1>{{status}} {{reason}}</h1><p>{{details}}</p><small>{{request_id}}</small>"


def test_an_editor_sets_a_routes_503_page_through_preview_and_publish(world, login):
    c = login(world["users"]["shop-editor"])
    route = world["objs"]["shop"]["route"]
    detail = c.get(reverse("dashboard:route", args=[route.pk])).content.decode()
    assert reverse("dashboard:route_error_pages", args=[route.pk]) in detail
    url = reverse("dashboard:route_error_pages", args=[route.pk])
    page = c.get(url).content.decode()
    assert 'name="page_503"' in page and 'name="page_404"' not in page  # a route has no 404 page
    assert 'sandbox=""' in page and 'target="frame-503"' in page
    form = html.unescape(re.search(r'name="etag" value="([^"]*)"', page).group(1))
    resp = publish(c, url, {"etag": form, "page_503": PAGE})
    assert resp.status_code == 302, errors_of(resp.content.decode())
    route.refresh_from_db()
    assert route.error_pages == {"503": PAGE}
    snap = ConfigVersion.objects.latest("number").snapshot
    assert {r["name"]: r.get("error_pages") for r in snap["routes"]}["shop-api"] == {"503": PAGE}
    assert AuditEntry.objects.filter(object_type="route", object_id=str(route.pk), note="office only").exists()


def test_an_unknown_placeholder_is_shown_on_its_field_and_nothing_changes(world, login):
    c = login(world["users"]["shop-editor"])
    route = world["objs"]["shop"]["route"]
    url = reverse("dashboard:route_error_pages", args=[route.pk])
    out = c.post(url, {"page_502": "<p>{{ password }}</p>", "_action": "preview"}).content.decode()
    assert 'data-field-errors="page_502"' in out and "unknown placeholder {{password}}" in out
    assert Route.objects.get(pk=route.pk).error_pages == {}


def test_another_tenants_route_and_viewers_get_no_editor(world, login):
    c = login(world["users"]["shop-editor"])
    other = world["objs"]["acme"]["route"]
    assert c.get(reverse("dashboard:route_error_pages", args=[other.pk])).status_code == 404
    viewer = login(world["users"]["shop-viewer"])
    assert viewer.get(reverse("dashboard:route_error_pages",
                              args=[world["objs"]["shop"]["route"].pk])).status_code == 403
    assert viewer.get(reverse("dashboard:error_pages")).status_code == 403


def test_staff_sets_platform_pages_in_one_version(world, login):
    c = login(world["users"]["staff"])
    assert reverse("dashboard:error_pages") in c.get(reverse("dashboard:routes")).content.decode()
    before = ConfigVersion.objects.count()
    resp = publish(c, reverse("dashboard:error_pages"), {"page_404": "<p>nothing at {{request_id}}</p>",
                                                         "page_502": PAGE})
    assert resp.status_code == 302, errors_of(resp.content.decode())
    assert ConfigVersion.objects.count() == before + 1
    snap = ConfigVersion.objects.latest("number").snapshot
    assert snap["error_pages"] == {"404": "<p>nothing at {{request_id}}</p>", "502": PAGE}
    version = ConfigVersion.objects.latest("number").number
    assert set(AuditEntry.objects.filter(object_type="errorpage", config_version=version)
               .values_list("action", flat=True)) == {"create"}
    # emptying a page removes it
    resp = publish(c, reverse("dashboard:error_pages"), {"page_404": "", "page_502": PAGE})
    assert resp.status_code == 302
    assert list(ErrorPage.objects.values_list("status", flat=True)) == [502]
    changes = c.get(reverse("dashboard:change", args=[ConfigVersion.objects.latest("number").number]))
    assert "error pages" in changes.content.decode()


def test_the_preview_frame_is_sandboxed_and_renders_sample_values_escaped(world, login):
    c = login(world["users"]["shop-viewer"])
    url = reverse("dashboard:error_page_preview", args=[503])
    resp = c.post(url, {"page_503": "<b>{{status}}</b> <i>{{request_id}}</i>"})
    csp = resp.headers["Content-Security-Policy"]
    assert "sandbox" in csp and "default-src 'none'" in csp and "script-src" not in csp
    assert resp.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert resp.content.decode() == "<b>503</b> <i>3f2a9c1e7b4d4e0f</i>"
    assert "Service Unavailable" in c.post(url, {"page_503": ""}).content.decode()  # the default page
    bad = c.post(url, {"page_503": "{{x}}<script>alert(1)</script>"}).content.decode()
    assert "unknown placeholder {{x}}" in bad and "<script>" not in bad
    assert c.get(url).status_code == 405
