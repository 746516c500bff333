"""The Config page in a real browser against a real Daphne (its own embedded
installation, so the changes it applies touch no other browser test): download the
export, upload a changed file, see the dry-run diff, apply it with a note, find the
new version on the Changes page. Screenshots: config-{1280,390}.png and
config-dry-run-{1280,390}.png."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.e2e.harness import ControlPlaneEnv, Stack, Upstream

pytestmark = [pytest.mark.chromium, pytest.mark.e2e]
PASSWORD = "config-browser-password"


def shell(cp, code: str) -> dict:
    return json.loads(cp.manage("shell", "-c", code).stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def world(browser_requirements, tmp_path_factory):
    root = tmp_path_factory.mktemp("config-browser")
    cp = ControlPlaneEnv("embedded", root).setup()
    stack = Stack(cp, root / "stack")
    try:
        stack.start_control_plane()
        shell(cp, (
            "import json\nfrom django.contrib.auth import get_user_model\n"
            f"get_user_model().objects.create_superuser('config-admin', 'a@example.com', '{PASSWORD}')\n"
            "print(json.dumps({'ok': True}))"))
        upstream = Upstream("config")   # only its port is used: a target to route to
        stack.upstreams.append(upstream)
        site = stack.create_site("shop", upstream)
        yield {"cp": cp, "site": site, "url": f"http://127.0.0.1:{stack.cp_port}", "tag": stack.tag}
    finally:
        stack.close()
        cp.close()


@pytest.fixture
def page(browser, world):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=world["url"],
                                  accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(20000)
    pg.goto("/login/")
    pg.fill("#id_username", "config-admin")
    pg.fill("#id_password", PASSWORD)
    pg.click("button[type=submit]")
    pg.wait_for_url(re.compile(r"/$"))
    yield pg
    context.close()


def test_download_change_upload_see_the_diff_apply_and_find_the_version(page, world, screenshots):
    route_name = f"route-shop-{world['tag']}"
    page.click("nav >> text=Config")
    page.wait_for_url(re.compile(r"/config/$"))
    screenshots(page, "config-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshots(page, "config-390")
    page.set_viewport_size({"width": 1280, "height": 900})

    with page.expect_download() as info:
        page.click("#download-yaml")
    download = info.value
    assert download.suggested_filename == "switchyard-platform.yaml"
    data = yaml.safe_load(open(download.path(), encoding="utf-8"))
    route = next(r for r in data["routes"] if r["name"] == route_name)
    assert route["hosts"] == [world["site"]["host"]] and route["priority"] == 0

    route["priority"] = 25
    route["path"] = "/shop"
    data["routes"].append({"name": f"status-{world['tag']}", "hosts": [f"status-{world['tag']}.e2e.test"],
                           "pool": route["pool"]})
    page.set_input_files("#id_file", files=[{"name": "switchyard.yaml", "mimeType": "application/yaml",
                                             "buffer": yaml.safe_dump(data, sort_keys=False).encode()}])
    page.click("#preview-button")
    page.wait_for_selector("#preview")
    diff = page.inner_text("#preview")
    assert "1 to create, 1 to change, 0 to delete" in diff
    changed = page.locator(f'[data-change="update:route {route_name}"]')
    assert "priority" in changed.inner_text() and "25" in changed.inner_text() and "/shop" in changed.inner_text()
    assert page.locator(f'[data-change="create:route status-{world["tag"]}"]').count() == 1
    screenshots(page, "config-dry-run-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshots(page, "config-dry-run-390")
    page.set_viewport_size({"width": 1280, "height": 900})

    page.fill("#apply-note", "shop under /shop, from a file")
    page.click("#apply-button")
    page.wait_for_url(re.compile(r"/config/$"))
    message = page.inner_text(".messages")
    assert "Applied: 1 created, 1 changed, 0 deleted; version" in message
    version = int(re.search(r"version (\d+)", message).group(1))

    page.click("nav >> text=Changes")
    top = page.locator("tr[data-version]").first
    assert top.get_attribute("data-version") == str(version)
    assert "shop under /shop, from a file" in top.inner_text()
    page.goto(f"/changes/{version}/")
    body = page.inner_text("main")
    assert "/shop" in body and f"status-{world['tag']}.e2e.test" in body
