"""The dashboard in a real browser against a real Daphne."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.chromium
PASSWORD = "browser-test-password"


def sign_in(page, username):
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))


def test_it_creates_a_pool_and_a_route_publishes_and_rolls_back(page, screenshots):
    sign_in(page, "admin")
    page.wait_for_selector("#live-pill.on", timeout=10000)  # the /ws/live/ socket is up (session auth)
    screenshots(page, "overview")

    # a pool
    page.goto("/pools/new/")
    page.select_option("#id_tenant", "")
    page.fill("#id_name", "web")
    page.fill("#id_targets", "127.0.0.1:8081\n127.0.0.1:8082 weight=2")
    page.click("#preview-button")
    page.wait_for_selector("#preview")
    page.fill("#id_note", "add web pool")
    page.click("#publish-button")
    page.wait_for_url(re.compile(r"/pools/\d+/$"))
    assert "saved" in page.inner_text(".messages")
    screenshots(page, "pool-detail")

    # a route using it: the preview shows the diff
    page.goto("/routes/new/")
    page.select_option("#id_tenant", "")
    page.fill("#id_name", "web")
    page.fill("#id_hosts", "web.localhost")
    page.select_option("#id_pool", label="web (platform)")
    page.click("#preview-button")
    page.wait_for_selector("#preview")
    diff = page.inner_text("#preview")
    assert "route web" in diff and "added" in diff and "web.localhost" in diff
    assert "pool web" in diff  # the pool reaches the nodes with its first route
    page.fill("#id_note", "launch web")
    screenshots(page, "route-preview")
    page.click("#publish-button")
    page.wait_for_url(re.compile(r"/routes/\d+/$"))
    screenshots(page, "route-detail")

    # the change is on the changes page, with its note; roll it back
    page.goto("/changes/")
    first_row = page.locator("tr[data-version]").first
    assert "launch web" in first_row.inner_text()
    live = int(first_row.get_attribute("data-version"))
    screenshots(page, "changes")
    page.goto(f"/changes/diff/?a={live - 1}&b={live}")
    assert "web.localhost" in page.inner_text("main")
    screenshots(page, "diff")
    page.goto("/changes/")
    row = page.locator(f'tr[data-version="{live - 1}"]')
    row.locator(f'a[data-rollback="{live - 1}"]').click()
    page.wait_for_selector("#restore-diff")  # the diff against what runs now, before confirming
    assert "web.localhost" in page.inner_text("#restore-diff")
    page.fill("#restore-note", "undo web")
    page.click("#restore-confirm")
    page.wait_for_selector(".messages li.success")
    assert f"Rolled back to version {live - 1}" in page.inner_text(".messages")
    top = page.locator("tr[data-version]").first
    assert f"rollback to v{live - 1}" in top.inner_text()


def test_it_keeps_tenants_apart(page, live_server_url, screenshots):
    sign_in(page, "shop-editor")
    page.goto("/routes/")
    body = page.inner_text("main")
    assert "shop-api" in body and "acme-api" not in body and "demo" not in body
    screenshots(page, "routes-tenant")
    acme_link = None
    # find the acme route id as the admin would see it: ids are sequential, so probe them
    for pk in range(1, 10):
        response = page.request.get(f"{live_server_url}/routes/{pk}/")
        if response.status == 200:
            assert "acme" not in response.text()
        else:
            assert response.status == 404
            acme_link = pk
    assert acme_link is not None
    response = page.goto(f"/routes/{acme_link}/")
    assert response.status == 404
    for path in ("/pools/", "/certificates/", "/audit/", "/alerts/", "/changes/", "/"):
        page.goto(path)
        text = page.inner_text("main")
        for secret in ("acme-api", "acme-pool", "acme-cert", "acme.example.com"):
            assert secret not in text, (path, secret)
    assert page.goto("/tenants/").status == 404
    assert page.goto("/tenants/acme/").status == 404


def test_it_shows_the_main_pages(page, browser, live_server_url, screenshots):
    sign_in(page, "admin")
    for path, name in (("/", "overview-full"), ("/routes/", "routes"), ("/pools/", "pools"), ("/certificates/", "certificates"),
                       ("/nodes/", "nodes"), ("/audit/", "audit"), ("/alerts/", "alerts"),
                       ("/tenants/", "tenants"), ("/tenants/shop/", "tenant-detail")):
        page.goto(path)
        assert page.locator("h1").count() == 1
        screenshots(page, name)
    page.goto("/certificates/")
    page.locator("tr a").first.click()
    page.wait_for_selector("canvas[data-chart]")
    screenshots(page, "certificate-detail")
    page.goto("/pools/")
    page.get_by_role("link", name="demo-pool").click()
    page.wait_for_selector("canvas[data-chart]")
    screenshots(page, "pool-health")

    phone = browser.new_context(viewport={"width": 390, "height": 844}, base_url=live_server_url,
                                device_scale_factor=2, is_mobile=True, has_touch=True)
    mobile = phone.new_page()
    sign_in(mobile, "admin")
    screenshots(mobile, "phone-overview")
    mobile.click("#menu-toggle")
    screenshots(mobile, "phone-menu")
    mobile.goto("/routes/")
    screenshots(mobile, "phone-routes")
    width = mobile.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the phone layout scrolls sideways ({width} px)"
    phone.close()


def test_it_refuses_after_five_failed_logins(page):
    for _ in range(5):
        page.goto("/login/")
        page.fill("#id_username", "acme-editor")
        page.fill("#id_password", "nope")
        page.click("button[type=submit]")
    page.goto("/login/")
    page.fill("#id_username", "acme-editor")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    assert "Too many failed sign-in attempts" in page.inner_text("main")


def test_it_updates_pages_live_without_reload(page, run_django):
    from playwright.sync_api import expect  # imported here: without playwright the suite skips
    sign_in(page, "admin")
    page.goto("/nodes/")
    page.wait_for_selector("#live-pill.on")
    row = page.locator('tr[data-node]').first
    assert "connected" in row.inner_text()
    page.evaluate("window.__marker = 1")  # gone if the page reloads
    run_django("from controlplane.publishing.models import Node; "
               "Node.objects.filter(name='edge-1').update(connected=False, rejected_version=99, "
               "last_error=[{'path': 'routes[0].hosts', 'message': 'bad host'}])")
    expect(page.locator("tr[data-node]").first).to_contain_text("disconnected", timeout=10000)
    assert "rejected v99" in page.locator("tr[data-node]").first.inner_text()
    assert page.evaluate("window.__marker") == 1
    run_django("from controlplane.publishing.models import Node; "
               "Node.objects.filter(name='edge-1').update(connected=True)")
    page.goto("/")
    before = page.inner_text('[data-live="unhealthy_count"]')
    run_django("from controlplane.proxy.models import Target; "
               "Target.objects.filter(port=9000).update(healthy=False, health_reason='status 503')")
    expect(page.locator('[data-live="unhealthy_count"]')).not_to_have_text(before, timeout=10000)
    page.wait_for_selector("#unhealthy-panel >> text=status 503", timeout=10000)
