"""Issue 15, truthful health, in a real browser against real processes: a Daphne control
plane, a real node (``python -m dataplane``), and a real Celery worker and beat started
from the Procfile's lines (``tests/e2e/harness.py``), all on this module's own database.

1. A user creates a pool at a closed loopback port in the dashboard form, which offers
   the active check switched on, as a TCP connect check. Right away its target is not
   shown healthy; the beat-scheduled check marks it down, and the pool page shows it
   ``unhealthy`` with "connection refused" (the seconds from publishing to that page are
   reported). The overview counts it and never says every target is healthy.
2. A user switches the check off for a second pool at a closed port and routes a host to
   it: its target is ``unknown`` (grey), not healthy; after requests through the node fail
   with ``connection_refused``, the node's report makes the pool page, the pools list and
   the overview show the passive evidence ("passive: N connection_refused from node X").

Screenshots: health-pool-{1280,390}.png, health-overview-{1280,390}.png,
health-passive-pool-{1280,390}.png.
"""
from __future__ import annotations

import json
import re
import time

import pytest

from tests.e2e.harness import CeleryProcs, ControlPlaneEnv, Stack, free_port, wait_until

pytestmark = [pytest.mark.chromium, pytest.mark.e2e]
PASSWORD = "health-truth-browser-password"
# Generous for a loaded 2-core machine: beat reloads the schedule within a second of the
# save and the first round runs within one interval (5 s by default); the measured time
# is reported, the deadline only keeps a broken build from hanging.
DOWN_DEADLINE = 90.0
PASSIVE_DEADLINE = 90.0


def shell(cp, code: str) -> dict:
    return json.loads(cp.manage("shell", "-c", code).stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def world(browser_requirements, tmp_path_factory):
    root = tmp_path_factory.mktemp("health-truth-browser")
    cp = ControlPlaneEnv("embedded", root).setup()
    stack = Stack(cp, root / "stack")
    celery = CeleryProcs(cp, root / "celery")
    try:
        stack.start_control_plane()
        shell(cp, (
            "import json\nfrom django.contrib.auth import get_user_model\n"
            f"get_user_model().objects.create_superuser('health-admin', 'a@example.com', '{PASSWORD}')\n"
            "print(json.dumps({'ok': True}))"))
        node = stack.add_node()
        celery.start_worker()
        celery.start_beat()
        yield {"stack": stack, "cp": cp, "node": node, "celery": celery,
               "url": f"http://127.0.0.1:{stack.cp_port}"}
    finally:
        celery.close()
        stack.close()
        cp.close()


def signed_in(browser, world, width: int, height: int = 900):
    context = browser.new_context(viewport={"width": width, "height": height}, base_url=world["url"])
    page = context.new_page()
    page.set_default_timeout(30000)
    page.goto("/login/")
    page.fill("#id_username", "health-admin")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    return context, page


def closed_port() -> int:
    return free_port()  # nothing listens there: every connect is refused


def create_pool(page, name: str, target: str, check: bool) -> int:
    """Through the dashboard's pool form; returns the new pool's id."""
    page.goto("/pools/new/")
    # What a new pool offers: an active check, on, as a TCP connect check.
    assert page.is_checked("#id_health_check_enabled")
    assert page.input_value("#id_health_check_type") == "tcp"
    if page.locator("#id_tenant").count():
        page.select_option("#id_tenant", "")
    page.fill("#id_name", name)
    page.fill("#id_targets", target)
    if not check:
        page.uncheck("#id_health_check_enabled")
    page.click("#preview-button")
    page.wait_for_selector("#publish-button")
    page.fill("#id_note", f"issue 15: {name}")
    page.click("#publish-button")
    page.wait_for_url(re.compile(r"/pools/\d+/$"))
    return int(re.search(r"/pools/(\d+)/$", page.url).group(1))


def target_badge(page) -> str:
    return page.get_attribute("tr[data-target] [data-health]", "data-health")


def test_a_closed_port_is_shown_down_by_the_default_check_and_the_overview_does_not_claim_health(
        browser, world, screenshots, report_timing):
    port = closed_port()
    context, page = signed_in(browser, world, 1280)
    try:
        pool_id = create_pool(page, "closed-port", f"127.0.0.1:{port}", check=True)
        published = time.monotonic()
        seen = {target_badge(page)}
        assert seen <= {"unknown", "unhealthy"}, "a target never checked must not be shown healthy"

        def down():
            page.goto(f"/pools/{pool_id}/")
            state = target_badge(page)
            seen.add(state)
            return state == "unhealthy"
        wait_until(down, DOWN_DEADLINE, "the pool page to show the closed-port target unhealthy",
                   interval=0.5, on_timeout=world["celery"].logs)
        took = time.monotonic() - published
        report_timing("issue 15: pool at a closed port: publish -> pool page shows it unhealthy "
                      "(tcp check every 5 s)", took)
        assert "healthy" not in seen
        row = page.inner_text("tr[data-target]")
        assert "connection refused" in row
        assert "1 unhealthy" in page.inner_text("[data-health-counts]")
        screenshots(page, "health-pool-1280")

        page.goto("/")
        counts = page.inner_text(".stat[data-health-counts]")
        healthy, unhealthy, unknown = map(int, re.findall(r"\d+", counts)[:3])  # healthy · unhealthy · unknown
        assert unhealthy >= 1 and healthy == 0, counts
        panel = page.inner_text("#unhealthy-panel")
        assert "Every target is healthy" not in panel
        assert f"127.0.0.1:{port}" in panel and "connection refused" in panel
        screenshots(page, "health-overview-1280")
    finally:
        context.close()
    context, page = signed_in(browser, world, 390, 844)
    try:
        page.goto(f"/pools/{pool_id}/")
        assert target_badge(page) == "unhealthy"
        screenshots(page, "health-pool-390")
        page.goto("/")
        assert "Every target is healthy" not in page.inner_text("#unhealthy-panel")
        screenshots(page, "health-overview-390")
    finally:
        context.close()


def test_passive_connect_failures_from_the_node_show_on_a_pool_without_active_check(
        browser, world, screenshots, report_timing):
    stack, node = world["stack"], world["node"]
    port = closed_port()
    host = f"passive-{stack.tag}.e2e.test"
    context, page = signed_in(browser, world, 1280)
    try:
        pool_id = create_pool(page, "passive-only", f"127.0.0.1:{port}", check=False)
        assert target_badge(page) == "unknown"  # no check, no evidence: not "healthy"
        assert "no active check" in page.inner_text("tr[data-target]")
        page.goto("/")
        assert "Every target is healthy" not in page.inner_text("#unhealthy-panel")

        shell(world["cp"], (
            "import json\nfrom controlplane.proxy import services\nfrom controlplane.proxy.models import Pool\n"
            f"services.create_route(services.Actor.system(), name='passive', hosts=['{host}'], path='/', "
            f"path_type='prefix', pool=Pool.objects.get(pk={pool_id}), note='issue 15')\n"
            "print(json.dumps({'ok': True}))"))
        wait_until(lambda: node.get(host).status == 502, 60, "the node to route the host to the closed port",
                   interval=0.2, on_timeout=stack.logs)
        statuses = [node.get(host) for _ in range(8)]
        assert all(r.status == 502 and "connection_refused" in r.headers.get("proxy-status", "")
                   for r in statuses), [(r.status, r.headers.get("proxy-status")) for r in statuses]
        sent = time.monotonic()

        def evidence():
            page.goto(f"/pools/{pool_id}/")
            return "connection_refused" in page.inner_text("tr[data-target]")
        wait_until(evidence, PASSIVE_DEADLINE, "the pool page to show the node's connect failures",
                   interval=0.5, on_timeout=stack.logs)
        report_timing("issue 15: connect failures through the node -> pool page shows them (passive)",
                      time.monotonic() - sent)
        row = page.inner_text("tr[data-target]")
        assert re.search(rf"passive\s+(\d+) connection_refused from node {re.escape(node.name)} since \d\d:\d\d",
                         row), row
        count = int(re.search(r"passive\s+(\d+) connection_refused", row).group(1))
        assert count >= 3
        assert target_badge(page) == "unhealthy"  # no active result: the evidence decides
        screenshots(page, "health-passive-pool-1280")

        page.goto("/pools/")
        assert "passive failures" in page.inner_text(f"tr[data-pool='{pool_id}']")
        page.goto("/")
        panel = page.inner_text("#unhealthy-panel")
        assert "Every target is healthy" not in panel
        assert f"connection_refused from node {node.name}" in panel
    finally:
        context.close()
    context, page = signed_in(browser, world, 390, 844)
    try:
        page.goto(f"/pools/{pool_id}/")
        assert "connection_refused" in page.inner_text("tr[data-target]")
        screenshots(page, "health-passive-pool-390")
    finally:
        context.close()
