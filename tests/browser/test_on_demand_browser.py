"""On-demand TLS on the tenant page, in a real browser against a real Daphne control plane
with ACME configured (no CA needed for what the page says): staff switch it on for a
delegation with its limits through the form; the page then says on, shows the quota used
and the last refusal with its reason. Screenshots: on-demand-tenant (-1280 and -390)."""
from __future__ import annotations

import json
import re

import pytest

from tests.e2e.harness import ControlPlaneEnv, Stack

pytestmark = [pytest.mark.chromium, pytest.mark.e2e]
PASSWORD = "on-demand-browser-password"

SEED = """
import json
from django.contrib.auth import get_user_model
from controlplane.proxy import services
get_user_model().objects.create_superuser('od-admin', 'a@example.com', '%s')
actor = services.Actor.system()
t = services.create_tenant(actor, slug='t1', name='T1', allowed_networks=['127.0.0.0/8'])
d = services.create_delegation(actor, t, 'apps.t1.example')
services.create_delegation(actor, t, 'static.t1.example')
pool = services.create_pool(actor, tenant=t, name='t1-pool', targets=[{'host': '127.0.0.1', 'port': 9}])
services.create_route(actor, tenant=t, name='t1-apps', hosts=['*.apps.t1.example'], pool=pool)
print(json.dumps({'delegation': d.pk}))
""" % PASSWORD

REFUSE = """
from controlplane.acme import ondemand
ondemand.consider('one.apps.t1.example')
print(ondemand.consider('two-a-rather-long-name-for-the-table.apps.t1.example').reason)
"""


@pytest.fixture(scope="module")
def world(browser_requirements, tmp_path_factory):
    root = tmp_path_factory.mktemp("on-demand-browser")
    cp = ControlPlaneEnv("embedded", root).setup()
    cp.env.update(SWITCHYARD_ACME_DIRECTORY="https://ca.invalid/dir")
    stack = Stack(cp, root / "stack")
    try:
        ids = json.loads(cp.manage("shell", "-c", SEED).stdout.strip().splitlines()[-1])
        stack.start_control_plane()
        yield {"url": f"http://127.0.0.1:{stack.cp_port}", "cp": cp, **ids}
    finally:
        stack.close()
        cp.close()


def signed_in(browser, world, width: int):
    context = browser.new_context(viewport={"width": width, "height": 900}, base_url=world["url"])
    page = context.new_page()
    page.set_default_timeout(30000)
    page.goto("/login/")
    page.fill("#id_username", "od-admin")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    return context, page


def test_staff_switch_on_demand_on_and_the_page_shows_quota_and_refusals(browser, world, screenshots):
    context, page = signed_in(browser, world, 1280)
    try:
        page.goto("/tenants/t1/")
        row = page.locator(f"#on-demand-{world['delegation']}")
        assert "off" in row.inner_text()
        row.locator("input[name=on_demand_tls]").check()
        row.locator("input[name=on_demand_max_certificates]").fill("1")
        row.locator("input[name=on_demand_max_per_hour]").fill("4")
        row.locator("button[type=submit]").click()
        page.wait_for_load_state()
        assert "On-demand TLS on for apps.t1.example." in page.inner_text("main")
        reason = world["cp"].manage("shell", "-c", REFUSE).stdout.strip().splitlines()[-1]
        assert reason.startswith("quota: 1 of 1")
        page.goto("/tenants/t1/")
        text = page.locator(f"#on-demand-{world['delegation']}").inner_text()
        assert "on" in text and "1 of 1" in text and "1 of 4" in text
        assert "two-a-rather-long-name-for-the-table.apps.t1.example" in text and reason in text
        page.locator("#on-demand").scroll_into_view_if_needed()
        screenshots(page, "on-demand-tenant-1280")
    finally:
        context.close()
    context, page = signed_in(browser, world, 390)
    try:
        page.goto("/tenants/t1/")
        page.locator("#on-demand").scroll_into_view_if_needed()
        screenshots(page, "on-demand-tenant-390")
        overflow = page.evaluate("document.documentElement.scrollWidth > document.documentElement.clientWidth")
        assert not overflow
    finally:
        context.close()
