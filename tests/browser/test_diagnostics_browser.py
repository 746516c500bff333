"""Diagnostics pages in a real browser against real processes: a
Daphne control plane, a real node (``python -m dataplane``) and real upstreams from
``tests/e2e/harness.py``. An engineer's clicks for three scenarios:

- target port closed → the why-502 page shows ``connection_refused`` with its
  explanation, and its "probe" link shows the TCP step refused;
- client IP lost because ``trusted_proxies`` is wrong → the inspector shows the
  replaced ``X-Forwarded-For`` side by side;
- node rejecting a config → the NACK errors on the diagnostics status and node page.

Plus the live tail streaming a line into the page. Screenshots: diagnostics-*.png.
"""
from __future__ import annotations

import http.client
import json
import re
import time

import pytest

from tests.e2e.harness import ControlPlaneEnv, Node, Stack, free_port, wait_until

pytestmark = [pytest.mark.chromium, pytest.mark.e2e]
PASSWORD = "diag-browser-password"


class DiagNode(Node):
    """A node behind a "load balancer" at 127.0.0.1 that trusted_proxies does not list."""

    def argv(self):
        return super().argv() + ["--stats-seconds", "1", "--trusted-proxies", "10.0.0.0/8",
                                 "--workers", "1"]


def shell(cp, code: str) -> dict:
    return json.loads(cp.manage("shell", "-c", code).stdout.strip().splitlines()[-1])


def raw_request(port: int, host: str, path: str = "/", headers: dict | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def world(browser_requirements, tmp_path_factory):
    root = tmp_path_factory.mktemp("diag-browser")
    cp = ControlPlaneEnv("embedded", root).setup()
    stack = Stack(cp, root / "stack")
    try:
        stack.start_control_plane()
        shell(cp, (
            "import json\nfrom django.contrib.auth import get_user_model\n"
            f"get_user_model().objects.create_superuser('diag-admin', 'a@example.com', '{PASSWORD}')\n"
            "print(json.dumps({'ok': True}))"))
        base = stack.add_upstream("base")
        site = stack.create_site("base", base)
        closed = free_port()
        refused_host = f"refused-{stack.tag}.e2e.test"
        cp.call("create_site", name=f"refused-{stack.tag}", host=refused_host, port=closed)
        name = f"e2e-{stack.tag}-diag"
        node = DiagNode(stack, name, cp.call("register_node", name=name)["token"])
        stack.nodes.append(node)
        node.start()
        node.wait_served(site["host"], base.name, timeout=30)
        stack.wait_node_in_sync(node)
        ids = shell(cp, (
            "import json\nfrom controlplane.proxy.models import Route\nfrom controlplane.publishing.models import Node\n"
            f"print(json.dumps({{'base': Route.objects.get(name='route-base-{stack.tag}').id,"
            f" 'refused': Route.objects.get(name='route-refused-{stack.tag}').id,"
            f" 'node': Node.objects.get(name='{name}').id}}))"))
        yield {"stack": stack, "cp": cp, "node": node, "site": site, "refused_host": refused_host,
               "closed": closed, "ids": ids, "url": f"http://127.0.0.1:{stack.cp_port}"}
    finally:
        stack.close()
        cp.close()


@pytest.fixture
def page(browser, world):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=world["url"])
    pg = context.new_page()
    pg.set_default_timeout(20000)
    pg.goto("/login/")
    pg.fill("#id_username", "diag-admin")
    pg.fill("#id_password", PASSWORD)
    pg.click("button[type=submit]")
    pg.wait_for_url(re.compile(r"/$"))
    yield pg
    context.close()


def test_closed_port_why_502_and_probe_show_connection_refused(page, world, screenshots):
    node, rid = world["node"], world["ids"]["refused"]
    for _ in range(5):
        assert raw_request(node.http_port, world["refused_host"]) == 502
    page.click("nav >> text=Diagnostics")
    page.wait_for_selector(f"tr[data-route='{rid}']")
    screenshots(page, "diagnostics-status")
    page.click(f"tr[data-route='{rid}'] >> text=Why 502/504?")
    page.wait_for_url(re.compile(rf"/diagnostics/routes/{rid}/$"))

    def counted():  # traffic reports arrive every second (--stats-seconds 1)
        page.goto(f"/diagnostics/routes/{rid}/?minutes=15")
        return page.locator(".why-item[data-type='connection_refused']").count() == 1
    wait_until(counted, 30, "connection_refused on the why-502 page", interval=1.0)
    item = page.locator(".why-item[data-type='connection_refused']")
    assert "Nothing is listening" in item.inner_text()
    assert item.locator("a", has_text="Tail connection_refused").get_attribute("href").endswith(
        "proxy_status=connection_refused")
    screenshots(page, "diagnostics-why-502")

    item.locator(".probe-link").first.click()
    page.wait_for_selector("#probe-result", timeout=30000)
    tcp = page.inner_text("tr[data-step='tcp']")
    assert "connection refused" in tcp and str(world["closed"]) in tcp
    assert "tcp" in page.inner_text("#probe-summary")
    screenshots(page, "diagnostics-probe-refused")


def test_lost_client_ip_inspector_shows_the_replaced_forwarded_for(page, world, screenshots):
    node, rid, host = world["node"], world["ids"]["base"], world["site"]["host"]
    page.goto(f"/diagnostics/routes/{rid}/inspect/")
    page.fill("#i-count", "2")
    page.click("#arm-button")
    page.wait_for_selector("#armed")

    def captured():
        raw_request(node.http_port, host, "/whoami",
                    {"X-Forwarded-For": "203.0.113.7", "Authorization": "Bearer very-secret"})
        page.goto(f"/diagnostics/routes/{rid}/inspect/")
        return page.locator("section.capture").count() >= 1
    wait_until(captured, 20, "a captured request on the inspector page", interval=0.5)
    cap = page.locator("section.capture").first
    row = cap.locator("tr[data-header='x-forwarded-for']")
    cells = row.locator("td").all_inner_texts()
    assert cells[1] == "203.0.113.7" and cells[2] == "127.0.0.1", cells
    assert "changed" in row.get_attribute("class")
    text = cap.inner_text()
    assert "trusted_proxies" in text and "10.0.0.0/8" in text and "very-secret" not in text
    screenshots(page, "diagnostics-inspector")


def test_live_tail_streams_a_filtered_line(page, world, screenshots):
    from playwright.sync_api import expect  # imported here: without playwright the suite skips
    node, rid, host = world["node"], world["ids"]["base"], world["site"]["host"]
    page.goto(f"/diagnostics/tail/?route={rid}")
    expect(page.locator("#tail-state")).to_have_text("streaming")
    time.sleep(0.5)  # the tail.start reaching the node

    def streamed():
        raw_request(node.http_port, host, "/tail-me")
        return page.locator("tr.tail-line").count() >= 1
    wait_until(streamed, 20, "a line in the live tail", interval=0.5)
    assert "/tail-me" in page.locator("tr.tail-line").first.inner_text()
    screenshots(page, "diagnostics-tail")
    page.click("#tail-stop")


def test_rejected_config_shows_nack_errors(page, world, screenshots):
    shell(world["cp"], (
        "import copy, json\nfrom controlplane.publishing.models import ConfigVersion\n"
        "from dataplane import schema\n"
        "latest = ConfigVersion.objects.order_by('-number').first()\n"
        "snap = copy.deepcopy(latest.snapshot)\n"
        "snap['routes'].append({'id': 999999, 'name': 'broken', 'tenant': None,"
        " 'hosts': ['broken.e2e.test'], 'pool': 424242})\n"
        "ConfigVersion.objects.create(number=latest.number + 1, sha256=schema.snapshot_hash(snap),"
        " snapshot=snap, author='e2e', note='a snapshot the node refuses')\n"
        "print(json.dumps({'ok': True}))"))
    nid = world["ids"]["node"]

    def nacked():
        page.goto("/diagnostics/")
        return "rejected the current version" in page.inner_text(f"tr[data-node='{nid}']")
    wait_until(nacked, 30, "the NACK on the diagnostics status", interval=0.5)
    assert "unknown pool 424242" in page.inner_text(f"tr[data-node='{nid}']")
    screenshots(page, "diagnostics-nack")
    page.click(f"tr[data-node='{nid}'] a")
    page.wait_for_url(re.compile(rf"/nodes/{nid}/$"))
    assert "unknown pool 424242" in page.inner_text("main")
    screenshots(page, "diagnostics-node-nack")
