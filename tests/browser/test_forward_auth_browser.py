"""Forward auth in a real browser: a tenant editor sets it on a route's edit page
(preview → publish) and the route page shows it. Screenshots at 1280 and 390 px wide:
route-forward-auth-form-{1280,390}.png (the form), route-forward-auth-{1280,390}.png
(the route page), routes-forward-auth-{1280,390}.png (the routes list's badge)."""
from __future__ import annotations

import json
import re

import pytest

from .test_dashboard_browser import sign_in

pytestmark = pytest.mark.chromium

URL = "https://auth.shop.example.com/api/authz/forward-auth"


def test_an_editor_sets_forward_auth_on_a_route(page, screenshots, run_django):
    sign_in(page, "shop-editor")
    page.goto("/routes/")
    page.click("a:text-is('shop-api')")
    page.wait_for_url(re.compile(r"/routes/\d+/$"))
    assert page.locator("#route-forward-auth").inner_text() == "off"
    page.click(".page-head a.btn.primary")
    page.wait_for_url(re.compile(r"/routes/\d+/edit/$"))
    page.fill("#id_forward_auth_url", URL)
    page.fill("#id_forward_auth_headers", "Remote-User, Remote-Groups, Remote-Email, Remote-Name")
    page.fill("#id_forward_auth_timeout", "3")
    page.locator("#forward-auth-fields").scroll_into_view_if_needed()
    screenshots(page, "route-forward-auth-form-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshots(page, "route-forward-auth-form-390")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.click("#preview-button")
    assert "forward_auth" in page.locator("#preview").inner_text().replace(" ", "_").lower() or \
        "forward auth" in page.locator("#preview").inner_text().lower()
    page.click("#publish-button")
    page.wait_for_selector("#route-forward-auth .mono")
    shown = page.locator("#route-forward-auth").inner_text()
    assert URL in shown and "Remote-User, Remote-Groups" in shown and "timeout 3" in shown
    stored = json.loads(run_django(
        "import json; from controlplane.proxy.models import Route; "
        "print(json.dumps(Route.objects.get(name='shop-api').forward_auth))").strip().splitlines()[-1])
    assert stored == {"url": URL, "response_headers": ["Remote-User", "Remote-Groups", "Remote-Email",
                                                       "Remote-Name"], "timeout": 3.0}
    screenshots(page, "route-forward-auth-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    screenshots(page, "route-forward-auth-390")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto("/routes/")
    assert "forward auth" in page.locator("tr", has_text="shop-api").inner_text()
    screenshots(page, "routes-forward-auth-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    screenshots(page, "routes-forward-auth-390")
    # put the route back as the other browser tests expect it
    run_django("from controlplane.proxy import services; from controlplane.proxy.models import Route; "
               "services.update_route(services.Actor.system(), Route.objects.get(name='shop-api'), "
               "forward_auth=None)")
