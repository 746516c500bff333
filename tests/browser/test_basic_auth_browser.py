"""Basic auth in a real browser: a tenant editor adds a user with a password to a new
access list (preview → publish; the password is never shown again), then creates a
proxy host with that list from the one-step form. Screenshots at 1280 and 390 px wide:
basic-auth-form-{1280,390}.png (new users), basic-auth-users-{1280,390}.png (the stored
users with Remove boxes) and proxy-host-access-list-{1280,390}.png."""
from __future__ import annotations

import json
import re

import pytest

from .test_dashboard_browser import sign_in

pytestmark = pytest.mark.chromium


def test_an_editor_adds_basic_auth_users_and_uses_the_list_for_a_proxy_host(page, screenshots, run_django):
    sign_in(page, "shop-editor")
    page.goto("/access-lists/new/")
    page.fill("#id_name", "staff-only")
    page.fill("[name=users-0-username]", "alice")
    page.fill("[name=users-0-password]", "correct horse battery")
    page.fill("[name=users-1-username]", "bob")
    page.fill("[name=users-1-password]", "another secret")
    screenshots(page, "basic-auth-form-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshots(page, "basic-auth-form-390")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.click("#preview-button")
    page.wait_for_selector("#publish-button")
    html = page.content()
    assert "correct horse battery" not in html and "another secret" not in html
    assert page.locator("[data-password-pending]").count() == 2
    page.click("#publish-button")
    page.wait_for_selector("text=saved")
    # the edit page: usernames, empty password boxes, "Remove" boxes
    assert page.locator("[name=users-0-username]").input_value() == "alice"
    assert page.locator("[name=users-0-password]").input_value() == ""
    assert "pbkdf2" not in page.content()
    screenshots(page, "basic-auth-users-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshots(page, "basic-auth-users-390")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto("/access-lists/")
    assert "2 users" in page.locator("tr", has_text="staff-only").inner_text()

    page.goto("/proxy-hosts/new/")
    page.fill("#id_hosts", "locked.shop.example.com")
    page.fill("#id_upstreams", "http://93.184.216.34:8080")
    page.select_option("#id_access_list", label="shop/staff-only — basic auth")
    screenshots(page, "proxy-host-access-list-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshots(page, "proxy-host-access-list-390")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.click("#preview-button")
    page.wait_for_selector("#publish-button, .errorlist")
    assert page.locator("#publish-button").count() == 1, page.locator(".errorlist").all_inner_texts()
    page.click("#publish-button")
    page.wait_for_url(re.compile(r"/routes/\d+/$"))
    assert page.locator("#route-access-list").inner_text() == "staff-only basic auth, 2 users"
    stored = json.loads(run_django(
        "import json; from controlplane.proxy.models import AccessList, Route; "
        "r = Route.objects.get(name='locked.shop.example.com'); a = AccessList.objects.get(name='staff-only'); "
        "print(json.dumps([r.access_list_id == a.id, [u['username'] for u in a.users], "
        "all(u['password_hash'].startswith('pbkdf2_sha256$') for u in a.users)]))").strip().splitlines()[-1])
    assert stored == [True, ["alice", "bob"], True]
    # leave the installation as the other browser tests expect it
    run_django("from controlplane.proxy import services; from controlplane.proxy.models import AccessList, Route; "
               "a = services.Actor.system(); r = Route.objects.get(name='locked.shop.example.com'); p = r.pool; "
               "services.delete_route(a, r); services.delete_pool(a, p); "
               "services.delete_access_list(a, AccessList.objects.get(name='staff-only'))")
