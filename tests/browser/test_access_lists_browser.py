"""Access lists in a real browser: a tenant editor opens "Access lists" from the menu,
creates one (preview → publish), attaches it to a route with maintenance on from the
route form, and the route page says so. Screenshots at 1280 and 390 px wide:
access-lists-{1280,390}.png (the list), access-list-form-{1280,390}.png."""
from __future__ import annotations

import json
import re

import pytest

from .test_dashboard_browser import sign_in

pytestmark = pytest.mark.chromium


def test_an_editor_creates_an_access_list_and_attaches_it_to_a_route(page, screenshots, run_django):
    sign_in(page, "shop-editor")
    page.click("#main-nav >> text=Access lists")
    page.wait_for_url(re.compile(r"/access-lists/$"))
    page.click("text=New access list")
    page.fill("#id_name", "office")
    page.select_option("#id_default", "deny")
    page.fill("#id_rules", "allow 192.0.2.0/24\nallow 2001:db8::/32\ndeny 198.51.100.7")
    screenshots(page, "access-list-form-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshots(page, "access-list-form-390")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.click("#preview-button")
    page.fill("#preview textarea[name=note]", "office network only")
    page.click("#publish-button")
    page.wait_for_selector("text=saved")
    page.goto("/access-lists/")
    row = page.locator("tr", has_text="office")
    assert "allow 192.0.2.0/24" in row.inner_text() and "deny" in row.inner_text()

    page.goto("/routes/")
    page.click("a:text-is('shop-api')")
    page.wait_for_url(re.compile(r"/routes/\d+/$"))
    page.click(".page-head a.btn.primary")
    page.wait_for_url(re.compile(r"/routes/\d+/edit/$"))
    page.select_option("#id_access_list", label="shop/office")
    page.check("#id_maintenance")
    page.fill("#id_retry_after", "120")
    page.click("#preview-button")
    assert page.locator("#preview").inner_text().count("access list") >= 1
    page.click("#publish-button")
    page.wait_for_selector("#route-access-list")
    assert page.locator("#route-access-list").inner_text() == "office"
    assert "Retry-After 120 s" in page.locator("#route-maintenance").inner_text()
    stored = json.loads(run_django(
        "import json; from controlplane.proxy.models import Route; r = Route.objects.get(name='shop-api'); "
        "print(json.dumps([r.access_list.name, r.maintenance, r.retry_after]))").strip().splitlines()[-1])
    assert stored == ["office", True, 120]

    page.goto("/access-lists/")
    assert page.locator("tr", has_text="office").locator("td.num").inner_text() == "1"
    screenshots(page, "access-lists-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    screenshots(page, "access-lists-390")
    # put the route back as the other browser tests expect it
    run_django("from controlplane.proxy import services; from controlplane.proxy.models import Route; "
               "services.update_route(services.Actor.system(), Route.objects.get(name='shop-api'), "
               "access_list=None, maintenance=False)")
