"""Alert channels ("Send test" to a real HTTP receiver on loopback, the form that shows
the fields of the chosen kind) and restoring a version from its page, in a real browser
against a real Daphne."""
from __future__ import annotations

import json
import re

import pytest

from tests.alerts.servers import WEBHOOK_SECRET, _serve
from tests.browser.test_dashboard_browser import sign_in

pytestmark = pytest.mark.chromium


def both_widths(page, screenshots, name):
    """Screenshots at 1280 px and at phone width (390 px)."""
    for width, height in ((1280, 900), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        screenshots(page, f"{name}-{width}")
    page.set_viewport_size({"width": 1280, "height": 900})


@pytest.fixture
def receiver():
    state, httpd = _serve()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_i_create_a_webhook_channel_and_send_it_a_test(page, screenshots, receiver):
    sign_in(page, "admin")
    page.goto("/alerts/channels/new/")
    page.select_option("#id_tenant", "")
    page.select_option("#id_kind", "email")
    assert page.is_visible("#id_emails") and not page.is_visible("#id_url")
    page.select_option("#id_kind", "webhook")  # only the webhook's fields now
    assert page.is_visible("#id_url") and page.is_visible("#id_secret") and not page.is_visible("#id_emails")
    page.fill("#id_name", "browser hook")
    page.fill("#id_url", receiver.url("/switchyard"))
    page.fill("#id_secret", WEBHOOK_SECRET)
    both_widths(page, screenshots, "alerts-channel-form")
    page.click("#channel-form button[type=submit]")
    page.wait_for_url(re.compile(r"/alerts/$"))
    assert "Alert channel browser hook saved." in page.inner_text(".messages")

    row = page.locator("tr", has=page.locator("a", has_text="browser hook"))
    button = row.locator("button[data-send-test]")
    channel_id = button.get_attribute("data-send-test")
    button.click()
    result = page.locator(f"#test-result-{channel_id}")
    result.locator("[data-test-ok]").wait_for()
    assert "127.0.0.1 answered 200" in result.inner_text()
    tests = [r for r in receiver.requests if r.headers.get("X-Switchyard-Event") == "test"]
    assert len(tests) == 1 and tests[0].path == "/switchyard" and tests[0].signature_valid
    assert tests[0].json["subject"] == "Test message for alert channel browser hook"
    both_widths(page, screenshots, "alerts")

    # the receiver fails: the page says how
    receiver.statuses = [500]
    button.click()
    result.locator("[data-test-failed]").wait_for()
    assert "answered 500: receiver exploded" in result.inner_text()


def test_i_restore_a_version_from_its_page_after_seeing_the_diff(page, screenshots, run_django):
    out = run_django(
        "import json\n"
        "from controlplane.proxy import services\n"
        "from controlplane.proxy.models import Route\n"
        "from controlplane.publishing import publisher\n"
        "from tests.controlplane import helpers as h\n"
        "route = Route.objects.get(name='shop-api')\n"
        "good = publisher.current_version()\n"
        "services.update_route(h.ACTOR, route, path='/moved-by-mistake', note='move the shop api')\n"
        "print(json.dumps({'route': route.pk, 'good': good.number, 'bad': publisher.current_version().number}))\n")
    ids = json.loads(out.strip().splitlines()[-1])
    good, bad = ids["good"], ids["bad"]
    sign_in(page, "admin")

    # the changes list says what each version changed, not only its note
    page.goto("/changes/")
    summary = page.inner_text(f'[data-summary="{bad}"]')
    assert "route shop/shop-api" in summary and "path" in summary

    page.goto(f"/changes/{good}/")
    page.click("#restore-link")
    page.wait_for_url(re.compile(rf"/changes/{good}/restore/$"))
    diff = page.inner_text("#restore-diff")  # what changes against what runs now, in the page
    assert "route shop/shop-api" in diff and "/moved-by-mistake" in diff
    page.fill("#restore-note", "the move broke checkout")
    both_widths(page, screenshots, "changes-restore")
    page.click("#restore-confirm")
    page.wait_for_selector(".messages li.success")
    assert f"Rolled back to version {good}" in page.inner_text(".messages")
    top = page.locator("tr[data-version]").first
    assert f"Restore of version {good}: " in top.inner_text() and "the move broke checkout" in top.inner_text()
    restored = int(top.get_attribute("data-version"))

    # the restore shows in the route's own history
    page.goto(f"/routes/{ids['route']}/")
    history = page.locator("section", has=page.locator("h2", has_text="History")).inner_text()
    assert "restore" in history and f"v{restored}" in history
