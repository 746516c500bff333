"""Basic auth on a route in a real browser: a tenant editor adds users in the route edit
page's "Basic auth" box (preview → publish; the password is never shown again) and the
route page shows the number of users and the realm. Screenshots at 1280 and 390 px wide:
route-basic-auth-form-{1280,390}.png (the form), route-basic-auth-{1280,390}.png (the
route page), routes-basic-auth-{1280,390}.png (the routes list's badge)."""
from __future__ import annotations

import json
import re

import pytest

from .conftest import SCREENSHOTS
from .test_dashboard_browser import sign_in

pytestmark = pytest.mark.chromium


def test_an_editor_sets_basic_auth_users_on_a_route(page, screenshots, run_django):
    sign_in(page, "shop-editor")
    page.goto("/routes/")
    page.click("a:text-is('shop-api')")
    page.wait_for_url(re.compile(r"/routes/\d+/$"))
    assert page.locator("#route-own-basic-auth").inner_text() == "off"
    page.click(".page-head a.btn.primary")
    page.wait_for_url(re.compile(r"/routes/\d+/edit/$"))
    page.fill("#id_basic_auth_realm", "Shop staff")
    box = page.locator("#basic-auth-users")
    box.locator("[name=users-0-username]").fill("alice")
    box.locator("[name=users-0-password]").fill("correct horse battery")
    box.locator("[name=users-1-username]").fill("bob")
    box.locator("[name=users-1-password]").fill("another secret")
    box.scroll_into_view_if_needed()
    screenshots(page, "route-basic-auth-form-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshots(page, "route-basic-auth-form-390")
    box.screenshot(path=str(SCREENSHOTS / "route-basic-auth-box-390.png"))  # the box alone, readable
    page.set_viewport_size({"width": 1280, "height": 900})
    page.click("#preview-button")
    page.wait_for_selector("#publish-button, .errorlist")
    assert page.locator("#publish-button").count() == 1, page.locator(".errorlist").all_inner_texts()
    html = page.content()
    assert "correct horse battery" not in html and "another secret" not in html
    assert page.locator("[data-password-pending]").count() == 2
    page.click("#publish-button")
    page.wait_for_url(re.compile(r"/routes/\d+/$"))
    shown = page.locator("#route-own-basic-auth").inner_text()
    assert shown.startswith("2 users") and "Shop staff" in shown
    stored = json.loads(run_django(
        "import json; from controlplane.proxy.models import Route; "
        "b = Route.objects.get(name='shop-api').basic_auth; "
        "print(json.dumps([b['realm'], [u['username'] for u in b['users']], "
        "all(u['password_hash'].startswith('pbkdf2_sha256$') for u in b['users'])]))").strip().splitlines()[-1])
    assert stored == ["Shop staff", ["alice", "bob"], True]
    screenshots(page, "route-basic-auth-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    screenshots(page, "route-basic-auth-390")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto("/routes/")
    assert "basic auth" in page.locator("tr", has_text="shop-api").inner_text()
    screenshots(page, "routes-basic-auth-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    screenshots(page, "routes-basic-auth-390")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto("/routes/")
    page.click("a:text-is('shop-api')")
    page.wait_for_url(re.compile(r"/routes/\d+/$"))
    # the edit page: usernames, empty password boxes, Remove boxes; nothing secret
    page.click(".page-head a.btn.primary")
    page.wait_for_url(re.compile(r"/routes/\d+/edit/$"))
    assert page.locator("[name=users-0-username]").input_value() == "alice"
    assert page.locator("[name=users-0-password]").input_value() == ""
    assert "pbkdf2" not in page.content()
    # put the route back as the other browser tests expect it
    run_django("from controlplane.proxy import services; from controlplane.proxy.models import Route; "
               "services.update_route(services.Actor.system(), Route.objects.get(name='shop-api'), "
               "basic_auth=None)")
