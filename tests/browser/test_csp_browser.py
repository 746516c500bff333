"""The dashboard and the admin work under their Content-Security-Policy: charts draw,
htmx panels refresh from the live socket, and the browser reports no violation."""
from __future__ import annotations

import re

import pytest

from .test_dashboard_browser import sign_in

pytestmark = pytest.mark.chromium

# Injected by the browser before any page script (DevTools, not subject to the policy).
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline") + " " + (e.sourceFile || "") + ":" + e.lineNumber);
});
"""
PAGES = ["/", "/routes/", "/pools/", "/certificates/", "/nodes/", "/changes/", "/audit/", "/alerts/", "/tenants/",
         "/tenants/shop/", "/diagnostics/", "/diagnostics/tail/", "/diagnostics/probe/", "/admin/",
         "/admin/proxy/route/", "/admin/proxy/route/add/"]


@pytest.fixture
def csp_page(page):
    console = []
    page.on("console", lambda msg: console.append(msg.text) if msg.type == "error" else None)
    page.add_init_script(RECORD_VIOLATIONS)
    page.console_errors = console
    return page


def violations(page) -> list[str]:
    return page.evaluate("window.__csp") + [m for m in page.console_errors if "Content Security Policy" in m]


def test_every_page_runs_under_the_policy_without_a_violation(csp_page, run_django):
    page = csp_page
    page.goto("/login/")
    assert violations(page) == []
    sign_in(page, "admin")
    for path in PAGES:
        response = page.goto(path)
        assert "script-src 'self'" in response.headers["content-security-policy"], path
        page.wait_for_load_state("load")
        assert violations(page) == [], path
    # charts draw from their JSON blocks (pool health, certificate expiry)
    page.goto("/pools/")
    page.goto(page.get_by_role("link", name="demo-pool").get_attribute("href"))
    assert page.locator("canvas[data-chart]").first.evaluate("canvas => Chart.getChart(canvas) !== undefined")
    page.goto("/certificates/")
    page.goto(page.locator("tr a").first.get_attribute("href"))
    assert page.locator("canvas[data-chart]").first.evaluate("canvas => Chart.getChart(canvas) !== undefined")
    assert violations(page) == []


def test_htmx_panels_refresh_from_the_live_socket_under_the_policy(csp_page, run_django):
    page = csp_page
    sign_in(page, "admin")
    page.goto("/nodes/")
    page.wait_for_selector("#live-pill.on")  # the socket passed the Origin check
    page.evaluate("window.__marker = 1")  # gone if the page reloads
    run_django("from controlplane.publishing.models import Node; "
               "Node.objects.filter(name='edge-1').update(rejected_version=77)")
    page.wait_for_selector("#nodes-table >> text=rejected v77", timeout=10000)  # htmx swapped the panel in
    assert page.evaluate("window.__marker") == 1
    assert violations(page) == []


def test_the_delete_page_cancel_link_stays_on_the_site(csp_page):
    page = csp_page
    sign_in(page, "admin")
    page.goto("/routes/")
    href = page.locator("main tr a").first.get_attribute("href")
    route = re.search(r"/routes/(\d+)/", href).group(1)
    page.goto(f"/routes/{route}/delete/?back=javascript:alert(document.domain)")
    page.click("text=Cancel")
    page.wait_for_url(re.compile(r"/routes/$"))
    assert violations(page) == []
