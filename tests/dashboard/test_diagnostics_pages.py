"""Diagnostics pages: render for staff and tenants, scoped like the
API (another tenant's route is a 404), forms report service errors on the page.
Node round trips are driven in tests/browser/test_diagnostics_browser.py."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from controlplane.diagnostics.models import CaptureSession, CapturedRequest

pytestmark = pytest.mark.django_db


def pages(objs, slug):
    r = objs[slug]["route"].pk
    return [reverse("dashboard:diagnostics"), reverse("dashboard:diagnostics_tail"),
            reverse("dashboard:diagnostics_probe"), reverse("dashboard:diagnostics_tls"),
            reverse("dashboard:diagnostics_why", args=[r]),
            reverse("dashboard:diagnostics_inspect", args=[r])]


def test_the_nav_has_diagnostics_and_anonymous_users_go_to_login(client, world, login):
    for url in pages(world["objs"], "shop"):
        assert client.get(url).status_code == 302
    c = login(world["users"]["shop-viewer"])
    assert 'href="/diagnostics/"' in c.get(reverse("dashboard:overview")).content.decode()


def test_every_page_renders_for_staff(world, login):
    c = login(world["users"]["staff"])
    for slug in ("shop", "acme"):
        for url in pages(world["objs"], slug):
            assert c.get(url).status_code == 200, url
    body = c.get(reverse("dashboard:diagnostics")).content.decode()
    assert "edge-1" in body and "shop-api" in body and "acme-api" in body and "platform-api" in body
    assert reverse("dashboard:node", args=[world["node"].pk]) in body  # links the node page
    checked = c.get(reverse("dashboard:diagnostics") + "?check=1").content.decode()
    assert 'id="config-result"' in checked


def test_tenant_sees_its_own_routes_and_gets_404_for_others(world, login):
    c = login(world["users"]["shop-viewer"])
    for url in pages(world["objs"], "shop"):
        assert c.get(url).status_code == 200, url
    body = c.get(reverse("dashboard:diagnostics")).content.decode()
    assert "shop-api" in body and "acme-api" not in body and "platform-api" not in body
    assert "checkconfig" not in body  # config status is staff's
    acme = world["objs"]["acme"]["route"].pk
    for name in ("dashboard:diagnostics_why", "dashboard:diagnostics_inspect"):
        assert c.get(reverse(name, args=[acme])).status_code == 404
        assert c.get(reverse(name, args=[world["platform_route"].pk])).status_code == 404
    assert c.get(reverse("dashboard:diagnostics_tail") + f"?route={acme}").status_code == 404
    assert c.post(reverse("dashboard:diagnostics_inspect", args=[acme]), {"action": "arm"}).status_code == 404
    # another tenant's target cannot be probed
    target = world["objs"]["acme"]["target"].pk
    assert c.post(reverse("dashboard:diagnostics_probe"), {"target": target}).status_code == 404
    # nor another tenant's name TLS-checked
    assert c.post(reverse("dashboard:diagnostics_tls"), {"sni": "acme.example.com"}).status_code == 404


def test_tail_page_points_at_the_streaming_endpoint_with_the_filter(world, login):
    c = login(world["users"]["staff"])
    r = world["objs"]["shop"]["route"].pk
    body = c.get(reverse("dashboard:diagnostics_tail"),
                 {"route": r, "status": "5xx", "proxy_status": "connection_refused",
                  "client": "10.0.0.0/8", "host": "shop.example.com"}).content.decode()
    assert "/api/v1/diagnostics/tail/?route=" in body and "connection_refused" in body
    bad = c.get(reverse("dashboard:diagnostics_tail"), {"status": "hello"}).content.decode()
    assert 'id="diag-errors"' in bad


def test_forms_show_the_service_error_when_no_node_is_connected(world, login):
    c = login(world["users"]["staff"])
    body = c.post(reverse("dashboard:diagnostics_probe"), {"url": "http://127.0.0.1:9/"}).content.decode()
    assert "no data-plane node is connected" in body
    body = c.post(reverse("dashboard:diagnostics_probe"), {"url": "ftp://x"}).content.decode()
    assert "url:" in body
    r = world["objs"]["shop"]["route"].pk
    body = c.post(reverse("dashboard:diagnostics_inspect", args=[r]), {"action": "arm"}).content.decode()
    assert "no data-plane node is connected" in body


def test_viewer_cannot_arm_a_capture_but_sees_the_captured_headers_side_by_side(world, login):
    route = world["objs"]["shop"]["route"]
    s = CaptureSession.objects.create(route=route, tenant=route.tenant, count=1,
                                      expires=timezone.now() + dt.timedelta(minutes=5))
    CapturedRequest.objects.create(
        session=s, route=route, tenant=route.tenant, expires=timezone.now() + dt.timedelta(hours=1),
        data={"status": 200, "client_addr": "10.9.9.9", "client_trusted": False, "target": "10.0.0.1:80",
              "client_request": {"line": "GET / HTTP/1.1", "headers": [["Host", "shop.example.com"],
                                 ["X-Forwarded-For", "203.0.113.5"], ["Authorization", "[redacted]"]]},
              "upstream_request": {"line": "GET / HTTP/1.1", "headers": [["Host", "shop.example.com"],
                                   ["X-Forwarded-For", "10.9.9.9"]]},
              "upstream_response": {"status": 200, "reason": "OK", "headers": [["Content-Type", "text/plain"]]},
              "timings": {"total": 0.01}, "notes": ["x-forwarded-for '203.0.113.5' was replaced"]})
    c = login(world["users"]["shop-viewer"])
    url = reverse("dashboard:diagnostics_inspect", args=[route.pk])
    body = c.get(url).content.decode()
    assert 'id="arm-form"' not in body
    assert "203.0.113.5" in body and "10.9.9.9" in body and "[redacted]" in body and "was replaced" in body
    assert 'data-header="x-forwarded-for" class="changed"' in body and "Content-Type" in body
    assert c.post(url, {"action": "arm"}).status_code == 403
    assert 'id="arm-form"' in login(world["users"]["shop-editor"]).get(url).content.decode()


def test_why_page_explains_each_type_and_links_probe_and_tail(world, login, monkeypatch):
    from controlplane.diagnostics import services
    route = world["objs"]["shop"]["route"]
    real = services.route_errors

    def fake(p, pk, minutes=60):
        data = real(p, pk, minutes)
        data["errors_by_type"] = services.explained_errors(
            {"errors_by_type": [{"type": "connection_refused", "count": 3}]}, route)
        return data
    monkeypatch.setattr(services, "route_errors", fake)
    c = login(world["users"]["shop-editor"])
    body = c.get(reverse("dashboard:diagnostics_why", args=[route.pk])).content.decode()
    assert "connection_refused" in body and "Nothing is listening" in body
    assert "proxy_status=connection_refused" in body
    probe_form = re.search(r'<form method="post" action="/diagnostics/probe/"[^>]*>(.*?)</form>', body, re.S).group(1)
    assert 'name="target"' in probe_form and "csrfmiddlewaretoken" in probe_form  # one click, a POST
    assert 'id="latency-verdict"' in body
