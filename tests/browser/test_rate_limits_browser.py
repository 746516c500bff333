"""Rate limits in a real browser: a tenant editor limits a route on its edit page
(preview → publish) and the route page shows it; the node page and the route page say
when a node runs on fallback shares. Screenshots at 1280 and 390 px wide:
route-rate-limit-form-*, route-rate-limit-*, node-rate-limit-fallback-*."""
from __future__ import annotations

import json
import re

import pytest

from .test_dashboard_browser import sign_in

pytestmark = pytest.mark.chromium


def both_widths(page, screenshots, name, selector=None):
    if selector:
        page.locator(selector).scroll_into_view_if_needed()
    screenshots(page, f"{name}-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    if selector:
        page.locator(selector).scroll_into_view_if_needed()
    screenshots(page, f"{name}-390")
    overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1")
    page.set_viewport_size({"width": 1280, "height": 900})
    return overflow


def test_an_editor_limits_a_route_and_the_fallback_shows(page, screenshots, run_django):
    sign_in(page, "shop-editor")
    page.goto("/routes/")
    page.click("a:text-is('shop-api')")
    page.wait_for_url(re.compile(r"/routes/\d+/$"))
    route_url = page.url
    assert page.locator("#route-rate-limit").inner_text() == "none"
    page.click(".page-head a.btn.primary")
    page.wait_for_url(re.compile(r"/routes/\d+/edit/$"))
    page.fill("#id_rate_limit_rate", "50")
    page.fill("#id_rate_limit_burst", "10")
    page.select_option("#id_rate_limit_key", "header")
    page.fill("#id_rate_limit_header", "X-Api-Key")
    assert not both_widths(page, screenshots, "route-rate-limit-form", "#rate-limit-fields")
    page.click("#preview-button")
    assert "rate" in page.locator("#preview").inner_text().lower()
    page.click("#publish-button")
    page.wait_for_url(re.compile(r"/routes/\d+/$"))
    assert page.locator("#route-rate-limit").inner_text() == "50 requests/s, burst 10, per X-Api-Key value"
    stored = json.loads(run_django(
        "import json; from controlplane.proxy.models import Route; "
        "print(json.dumps(Route.objects.get(name='shop-api').rate_limit))").strip().splitlines()[-1])
    assert stored == {"rate": 50.0, "burst": 10, "key": "header", "header": "X-Api-Key"}

    # the shared store becomes unreachable for the node: the route page says so
    run_django("from controlplane.publishing import ratelimits; from controlplane.publishing.models import Node; "
               "ratelimits.record_state(Node.objects.get(name='edge-1').pk, True, 1800000000.0, "
               "'ConnectionError: Error 111 connecting to 127.0.0.1:6379. Connection refused.')")
    page.goto(route_url)
    assert "rate limit fallback: shared store unreachable since 2027-01-15" in \
        page.locator("#route-rate-limit").inner_text()
    assert not both_widths(page, screenshots, "route-rate-limit", "#route-rate-limit")

    page.context.clear_cookies()
    sign_in(page, "admin")
    page.goto("/nodes/")
    page.click("a:text-is('edge-1')")
    page.wait_for_selector("#node-rate-limit-fallback")
    assert "rate limit fallback: shared store unreachable since 2027-01-15 08:00:00" in \
        page.locator("#node-rate-limit-fallback").inner_text()
    assert not both_widths(page, screenshots, "node-rate-limit-fallback")

    # staff give the tenant one limit over all its routes (the tenant page's form)
    page.goto("/tenants/shop/")
    page.fill("#id_rate_limit_rate", "500")
    page.select_option("#id_rate_limit_key", "client_ip")
    assert not both_widths(page, screenshots, "tenant-rate-limit-form", "#id_rate_limit_rate")
    page.locator("#id_rate_limit_rate").press("Enter")
    page.wait_for_url(re.compile(r"/tenants/shop/$"))
    page.goto(route_url)
    assert "tenant shop (all its routes): 500 requests/s, burst 500, per client address" in \
        page.locator("#route-rate-limit").inner_text()

    # put things back as the other browser tests expect them
    run_django("from controlplane.proxy import services; from controlplane.proxy.models import Route; "
               "from controlplane.publishing import ratelimits; from controlplane.publishing.models import Node; "
               "ratelimits.record_state(Node.objects.get(name='edge-1').pk, False, None, ''); "
               "services.update_route(services.Actor.system(), Route.objects.get(name='shop-api'), rate_limit=None); "
               "from controlplane.tenancy.models import Tenant; "
               "services.update_tenant(services.Actor.system(), Tenant.objects.get(slug='shop'), rate_limit=None)")
