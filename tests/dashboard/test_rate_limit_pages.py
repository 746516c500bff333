"""Rate limits in the dashboard: the route form's four fields (preview → publish), the
service's messages at the rate field, the tenant form (staff), and the node and route
pages saying when a node runs on fallback shares."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse

from controlplane.publishing import ratelimits
from controlplane.publishing.models import ConfigVersion

from .test_forms import errors_of, route_post

pytestmark = pytest.mark.django_db


def publish(client, url, data):
    html = client.post(url, {**data, "_action": "preview"}).content.decode()
    digest = re.search(r'name="digest" value="([0-9a-f]{64})"', html)
    assert digest, errors_of(html) or html[:3000]
    return client.post(url, {**data, "_action": "publish", "digest": digest.group(1), "note": "throttle"})


def test_an_editor_limits_a_route_from_the_route_form(world, login):
    c = login(world["users"]["shop-editor"])
    route = world["objs"]["shop"]["route"]
    url = reverse("dashboard:route_edit", args=[route.pk])
    form = c.get(url).content.decode()
    assert 'name="rate_limit_rate"' in form and 'name="rate_limit_header"' in form
    data = route_post(world, name=route.name, hosts="\n".join(route.hosts), rate_limit_rate="25",
                      rate_limit_burst="5", rate_limit_key="header", rate_limit_header="X-Api-Key")
    assert publish(c, url, data).status_code == 302
    route.refresh_from_db()
    assert route.rate_limit == {"rate": 25.0, "burst": 5, "key": "header", "header": "X-Api-Key"}
    [compiled] = [r for r in ConfigVersion.objects.latest("number").snapshot["routes"] if r["id"] == route.pk]
    assert compiled["rate_limit"]["rate"] == 25.0
    page = c.get(reverse("dashboard:route", args=[route.pk])).content.decode()
    assert "25 requests/s, burst 5, per X-Api-Key value" in page
    assert 'value="25.0"' in c.get(url).content.decode()  # the form shows what is stored

    # the service's message lands at the rate field; nothing changes
    bad = route_post(world, name=route.name, hosts="\n".join(route.hosts), rate_limit_rate="25",
                     rate_limit_key="header", rate_limit_header="X Api")
    html = c.post(url, {**bad, "_action": "preview"}).content.decode()
    assert any("not a valid header name" in m for m in errors_of(html).get("rate_limit_rate", [])), errors_of(html)
    # emptying the rate removes the limit
    off = route_post(world, name=route.name, hosts="\n".join(route.hosts), rate_limit_rate="")
    assert publish(c, url, off).status_code == 302
    route.refresh_from_db()
    assert route.rate_limit is None


def test_staff_set_a_tenants_limit_and_its_route_pages_show_it(world, login):
    c = login(world["users"]["staff"])
    detail = c.get(reverse("dashboard:tenant", args=["shop"])).content.decode()
    assert 'name="rate_limit_rate"' in detail
    resp = c.post(reverse("dashboard:tenant_update", args=["shop"]), {
        "name": "Shop", "max_routes": "100", "max_pools": "50", "max_targets": "200", "max_certificates": "50",
        "allowed_networks": "", "rate_limit_rate": "200", "rate_limit_key": "client_ip"})
    assert resp.status_code == 302, errors_of(resp.content.decode())
    world["shop"].refresh_from_db()
    assert world["shop"].rate_limit == {"rate": 200.0, "burst": 200, "key": "client_ip", "header": ""}
    route = world["objs"]["shop"]["route"]
    page = login(world["users"]["shop-viewer"]).get(reverse("dashboard:route", args=[route.pk])).content.decode()
    assert "tenant shop (all its routes): 200 requests/s, burst 200, per client address" in page
    tenant_page = login(world["users"]["shop-viewer"]).get(reverse("dashboard:tenant", args=["shop"])).content.decode()
    assert "200 requests/s, burst 200, per client address (all routes together)" in tenant_page
    # members do not get the tenant form
    assert 'name="rate_limit_rate"' not in login(world["users"]["shop-owner"]).get(
        reverse("dashboard:tenant", args=["shop"])).content.decode()


def test_node_and_route_pages_say_when_the_shared_store_is_unreachable(world, login):
    node = world["node"]
    node.connected = True
    node.save()
    route = world["objs"]["shop"]["route"]
    route.rate_limit = {"rate": 10.0, "burst": 10, "key": "none", "header": ""}
    route.save()
    c = login(world["users"]["staff"])
    assert "rate limit fallback" not in c.get(reverse("dashboard:node", args=[node.pk])).content.decode()
    ratelimits.record_state(node.pk, True, 1_800_000_000.0, "ConnectionError: refused")
    page = c.get(reverse("dashboard:node", args=[node.pk])).content.decode()
    assert "rate limit fallback: shared store unreachable since 2027-01-15 08:00:00" in page
    assert "rate limit fallback: shared store unreachable since" in c.get(
        reverse("dashboard:route", args=[route.pk])).content.decode()
    ratelimits.record_state(node.pk, False, None, "")
    assert "rate limit fallback" not in c.get(reverse("dashboard:node", args=[node.pk])).content.decode()
