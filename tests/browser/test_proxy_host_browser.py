"""The one-step proxy host in a real browser against real processes: a Daphne control
plane, a real node (``python -m dataplane``) and two real upstreams on loopback
(``tests/e2e/harness.py``). A user opens "New proxy host" from the overview, types a
host name and two upstream URLs, previews (the pool and the route, added), publishes,
and the host is then served by both upstreams through the node; the changes list shows
the one new version with its note, and its diff the pool and the route.
Screenshots: proxy-host-1280.png, proxy-host-390.png."""
from __future__ import annotations

import re

import pytest

from tests.browser.conftest import create_superuser, signed_in
from tests.e2e.harness import ControlPlaneEnv, Stack, wait_until

pytestmark = [pytest.mark.chromium, pytest.mark.e2e]
PASSWORD = "proxy-host-browser-password"


@pytest.fixture(scope="module")
def world(browser_requirements, tmp_path_factory):
    root = tmp_path_factory.mktemp("proxy-host-browser")
    cp = ControlPlaneEnv("embedded", root).setup()
    stack = Stack(cp, root / "stack")
    try:
        stack.start_control_plane()
        create_superuser(cp, "host-admin", PASSWORD)
        base = stack.add_upstream("base")
        site = stack.create_site("base", base)
        node = stack.add_node()
        node.wait_served(site["host"], base.name, timeout=60)
        yield {"stack": stack, "cp": cp, "node": node, "url": f"http://127.0.0.1:{stack.cp_port}",
               "one": stack.add_upstream("one"), "two": stack.add_upstream("two")}
    finally:
        stack.close()
        cp.close()


def fill(page, host: str, upstreams: list[str]) -> None:
    page.fill("#id_hosts", host)
    page.fill("#id_upstreams", "\n".join(upstreams))
    page.check("#id_websocket")


def test_a_proxy_host_is_created_in_one_step_and_served_through_the_node(browser, world, screenshots):
    stack, node, one, two = world["stack"], world["node"], world["one"], world["two"]
    host = f"app-{stack.tag}.e2e.test"
    before = stack.cp.call("latest")["version"]
    context, page = signed_in(browser, world["url"], "host-admin", PASSWORD)
    try:
        screenshots(page, "proxy-host-overview-1280")
        page.click("#new-proxy-host")
        page.wait_for_url(re.compile(r"/proxy-hosts/new/$"))
        fill(page, host, [f"http://127.0.0.1:{one.port}", f"http://127.0.0.1:{two.port}"])
        page.click("#preview-button")
        page.wait_for_selector("#publish-button")
        assert page.locator(f"[data-diff-item='pool:{host}'] .badge").inner_text() == "added"
        assert page.locator(f"[data-diff-item='route:{host}'] .badge").inner_text() == "added"
        assert stack.cp.call("latest")["version"] == before  # a preview stores nothing
        screenshots(page, "proxy-host-1280")
        page.fill("#preview textarea[name=note]", "one-step proxy host")
        page.click("#publish-button")
        page.wait_for_url(re.compile(r"/routes/\d+/$"))
        assert "New proxy host: saved and published." in page.inner_text("body")
        assert host in page.inner_text("body")

        seen: set[str] = set()

        def both_upstreams_answer():
            r = node.get(host)
            if r.status == 200:
                seen.add(r.body.split("\n", 1)[0])
            return {f"upstream={one.name}", f"upstream={two.name}"} <= seen
        wait_until(both_upstreams_answer, 60, f"{host} served by both upstreams through the node",
                   interval=0.05, on_timeout=stack.logs)

        latest = stack.cp.call("latest")["version"]
        assert latest == before + 1  # one change, one version
        page.goto("/changes/")
        row = page.locator(f"tr[data-version='{latest}']")
        assert "one-step proxy host" in row.inner_text()
        row.locator(f"a[href$='/changes/{latest}/']").click()
        page.wait_for_url(re.compile(rf"/changes/{latest}/$"))
        assert page.locator(f"[data-diff-item='pool:{host}'] .badge").inner_text() == "added"
        assert page.locator(f"[data-diff-item='route:{host}'] .badge").inner_text() == "added"
    finally:
        context.close()


def test_the_form_on_a_phone_shows_the_fields_problems(browser, world, screenshots):
    context, page = signed_in(browser, world["url"], "host-admin", PASSWORD, 390, 844)
    try:
        page.goto("/routes/")
        assert page.locator("#new-proxy-host").is_visible()
        screenshots(page, "proxy-host-routes-390")
        page.click("#new-proxy-host")
        page.wait_for_url(re.compile(r"/proxy-hosts/new/$"))
        fill(page, "bad host!", ["ftp://127.0.0.1:21"])
        page.click("#preview-button")
        page.wait_for_selector("[data-field-errors='hosts']")
        assert "invalid host name" in page.inner_text("[data-field-errors='hosts']")
        assert "only http:// and https://" in page.inner_text("[data-field-errors='upstreams']")
        assert page.locator("#publish-button").count() == 0
        page.fill("#id_hosts", f"phone-{world['stack'].tag}.e2e.test")
        page.fill("#id_upstreams", f"http://127.0.0.1:{world['one'].port}")
        page.click("#preview-button")
        page.wait_for_selector("#publish-button")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
        screenshots(page, "proxy-host-390")
    finally:
        context.close()


@pytest.fixture(scope="module")
def acme_world(browser_requirements, tmp_path_factory):
    """A control plane with ACME pointed at Debian's Pebble, a node Pebble validates
    against, a Celery worker (``tests/e2e/test_acme.AcmeStack``)."""
    from tests.acme.pebble import require
    from tests.e2e.test_acme import AcmeStack
    require()
    s = AcmeStack("embedded", tmp_path_factory.mktemp("proxy-host-acme"))
    try:
        create_superuser(s.cp, "host-admin", PASSWORD)
        yield s
    finally:
        s.close()


def test_an_automatic_certificate_chosen_in_the_form_is_ordered_and_presented(browser, acme_world):
    s = acme_world
    host = f"auto-{s.stack.tag}.example.com"
    context, page = signed_in(browser, f"http://127.0.0.1:{s.stack.cp_port}", "host-admin", PASSWORD)
    try:
        page.goto("/proxy-hosts/new/")
        page.fill("#id_hosts", host)
        page.fill("#id_upstreams", f"http://127.0.0.1:{s.upstream.port}")
        page.select_option("#id_tls", "acme")
        page.check("#id_https_redirect")
        page.click("#preview-button")
        page.wait_for_selector("#publish-button")
        page.click("#publish-button")
        page.wait_for_url(re.compile(r"/routes/\d+/$"))
    finally:
        context.close()
    root_pem = s.pebble.root_pem()
    cert = wait_until(lambda: s.presented_chain(host, root_pem), 90,
                      f"node to present a Pebble-issued certificate for {host}", interval=0.1,
                      on_timeout=s.logs)[0]
    assert ("DNS", host) in cert["subjectAltName"]
    redirect = s.node.get(host)
    assert redirect.status == 308 and redirect.headers["location"].startswith(f"https://{host}")
