"""Forms people can read, in a real browser: the header rows editor, the preview with
its publish button in reach, the keyboard path through the route form, the PEM file
pickers with OpenSSL's self-signed recipe, the key kept after a refusal, and the
routes table that shows it scrolls on a phone."""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.support import wait_until

from .conftest import SCREENSHOTS
from .test_dashboard_browser import sign_in

pytestmark = pytest.mark.chromium
PHONE = {"width": 390, "height": 844}


def in_viewport(page, selector: str) -> bool:
    return page.evaluate("""(sel) => { const r = document.querySelector(sel).getBoundingClientRect();
        return r.top >= 0 && r.bottom <= window.innerHeight && r.height > 0; }""", selector)


def focused(page) -> str:
    """What has the focus: the id, else the aria-label, else the name, else the text."""
    return page.evaluate("""() => { const e = document.activeElement;
        return e.id || e.getAttribute('aria-label') || e.name || e.textContent.trim(); }""")


def route_of(run_django, name: str) -> dict:
    out = run_django("import json; from controlplane.proxy.models import Route; "
                     f"r = Route.objects.get(name={name!r}); "
                     "print(json.dumps({'request_headers': r.request_headers, 'headers': r.headers, "
                     "'max_body_size': r.max_body_size}))")
    return json.loads(out.strip().splitlines()[-1])


def test_it_edits_header_rules_as_rows_and_keeps_publish_in_reach(page, screenshots, run_django):
    sign_in(page, "admin")
    page.goto("/routes/new/")
    editor = page.locator('.rows-editor[data-rows-for="request_headers"]')
    assert editor.is_visible() and page.locator("#id_request_headers").is_hidden()
    assert "No header rules." in editor.inner_text()

    page.select_option("#id_tenant", "")
    page.fill("#id_name", "rows-route")
    page.fill("#id_hosts", "rows.localhost")
    page.select_option("#id_pool", label="demo-pool (platform)")
    page.fill("#id_max_body_size", "10 MiB")
    editor.get_by_role("button", name="Add a rule to Request headers").click()
    editor.get_by_label("Request headers, rule 1: header name").fill("X-Env")
    editor.get_by_label("Request headers, rule 1: value").fill("prod")
    editor.get_by_role("button", name="Add a rule to Request headers").click()
    editor.get_by_label("Request headers, rule 2: action").select_option("remove")
    editor.get_by_label("Request headers, rule 2: header name").fill("Server")
    assert editor.get_by_label("Request headers, rule 2: value").is_disabled()
    editor.get_by_role("button", name="Add a rule to Request headers").click()
    editor.get_by_label("Request headers, rule 3: header name").fill("X-Unwanted")
    editor.get_by_role("button", name="Remove rule 3 of Request headers").click()
    assert page.input_value("#id_request_headers") == "set X-Env: prod\nremove Server"
    matches = page.locator('.rows-editor[data-rows-for="headers"]')
    matches.get_by_role("button", name="Add a match to Header matches").click()
    matches.get_by_label("Header matches, header 1: header name").fill("X-Canary")
    matches.get_by_label("Header matches, header 1: value").fill("1")
    screenshots(page, "route-form-1280")

    page.click("#preview-button")
    page.wait_for_selector("#preview")
    diff = page.inner_text("#preview")
    assert "route rows-route" in diff and "X-Env" in diff
    assert in_viewport(page, "#publish-button"), "the publish button is on screen without scrolling"
    assert not page.locator("#form-fields").evaluate("d => d.open"), "the form is folded under the diff"
    # what the user sees without scrolling (a full-page shot would pin the sticky bar mid-page)
    page.screenshot(path=str(SCREENSHOTS / "route-preview-1280.png"))
    page.click("#publish-button")
    page.wait_for_url(re.compile(r"/routes/\d+/$"))
    stored = route_of(run_django, "rows-route")
    assert stored["request_headers"]["set"] == [{"name": "X-Env", "value": "prod"}]
    assert stored["request_headers"]["remove"] == ["Server"]
    assert stored["headers"] == [{"name": "X-Canary", "value": "1"}]
    assert stored["max_body_size"] == 10 * 1024 * 1024

    # editing shows the stored rules as rows again, and the size in MiB
    page.goto(page.url + "edit/")
    editor = page.locator('.rows-editor[data-rows-for="request_headers"]')
    assert editor.get_by_label("Request headers, rule 1: header name").input_value() == "X-Env"
    assert editor.get_by_label("Request headers, rule 2: action").input_value() == "remove"
    assert page.input_value("#id_max_body_size") == "10 MiB"

    page.set_viewport_size(PHONE)
    page.reload()
    screenshots(page, "route-form-390")


def test_the_route_form_works_from_the_keyboard(page, run_django):
    sign_in(page, "admin")
    page.goto("/routes/new/")
    page.select_option("#id_tenant", "")
    page.fill("#id_name", "kbd-route")
    page.fill("#id_hosts", "kbd.localhost")
    page.select_option("#id_pool", label="demo-pool (platform)")

    # Tab from the name to the preview button: every control once, in reading order
    page.focus("#id_name")
    seen = [focused(page)]
    for _ in range(80):
        page.keyboard.press("Tab")
        seen.append(focused(page))
        if seen[-1] == "preview-button":
            break
    assert seen[-1] == "preview-button", seen
    expected_order = ["id_name", "id_hosts", "id_path", "id_path_type", "id_methods", "id_priority",
                      "Add a match to Header matches", "id_enabled", "id_pool", "id_max_body_size",
                      "id_strip_prefix", "id_preserve_host", "id_websocket", "id_forwarded",
                      "Add a rule to Request headers", "Add a rule to Response headers", "id_certificate",
                      "id_https_redirect", "id_hsts_max_age", "id_note", "preview-button"]
    assert [s for s in seen if s in expected_order] == expected_order
    assert "id_request_headers" not in seen, "the hidden text fallback takes no focus"

    # a rule added from the keyboard: Enter on "Add", type, Tab on
    page.focus('button[aria-label="Add a rule to Request headers"]')
    page.keyboard.press("Enter")
    assert focused(page) == "Request headers, rule 1: action"
    page.keyboard.press("Tab")
    page.keyboard.type("X-From-Keyboard")
    page.keyboard.press("Tab")
    page.keyboard.type("yes")
    page.keyboard.press("Tab")
    assert focused(page) == "Remove rule 1 of Request headers"
    page.focus("#preview-button")
    page.keyboard.press("Enter")
    page.wait_for_selector("#preview")

    # after the preview, the publish button comes before the folded form
    page.focus("#id_note")
    page.keyboard.press("Tab")
    assert focused(page) == "publish-button"
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/routes/\d+/$"))
    assert route_of(run_django, "kbd-route")["request_headers"]["set"] == [
        {"name": "X-From-Keyboard", "value": "yes"}]


def openssl_self_signed(tmp_path, host: str) -> tuple:
    """OpenSSL 3's usual self-signed recipe (marks the certificate CA:TRUE), as files."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "30", "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}"],
                   check=True, capture_output=True, timeout=120)
    return cert, key


def test_it_uploads_pem_files_and_warns_about_a_self_signed_ca(page, screenshots, tmp_path):
    import trustme
    sign_in(page, "admin")
    cert, key = openssl_self_signed(tmp_path, "selfsigned.localhost")
    other = trustme.CA().issue_cert("selfsigned.localhost")
    wrong_key = tmp_path / "wrong-key.pem"
    wrong_key.write_bytes(other.private_key_pem.bytes())

    page.goto("/certificates/new/")
    page.select_option("#id_tenant", "")
    page.fill("#id_name", "selfsigned-cert")
    page.set_input_files("#id_certificate_file", str(cert))
    page.set_input_files("#id_private_key_file", str(wrong_key))
    screenshots(page, "certificate-form-1280")
    page.click("#upload-button")
    page.wait_for_selector('[data-field-errors="private_key_pem"]')
    assert "does not match" in page.inner_text('[data-field-errors="private_key_pem"]')
    # what the files held is in the form: nothing to paste or choose again but the right key
    assert page.input_value("#id_certificate_pem").startswith("-----BEGIN CERTIFICATE-----")
    assert page.input_value("#id_private_key_pem").strip() == wrong_key.read_text().strip()

    page.set_input_files("#id_private_key_file", str(key))
    page.click("#upload-button")
    page.wait_for_url(re.compile(r"/certificates/\d+/$"))
    assert "uploaded with 2 warnings" in page.inner_text(".messages")
    body = page.inner_text("main")
    assert "marked as a CA (basicConstraints CA:TRUE" in body
    assert "put the server" not in body

    page.goto("/certificates/new/")
    page.set_viewport_size(PHONE)
    page.reload()
    screenshots(page, "certificate-form-390")


def test_the_routes_table_shows_it_scrolls_on_a_phone(page, screenshots):
    sign_in(page, "admin")
    page.goto("/routes/")
    assert page.get_by_label("Filter routes").is_visible()
    assert page.locator("#routes-scroll-hint").is_hidden()
    screenshots(page, "routes-list-1280")
    page.set_viewport_size(PHONE)
    page.reload()
    wrap = page.locator("#routes-table")
    assert wrap.evaluate("w => w.scrollWidth > w.clientWidth"), "the table is wider than the phone"
    assert page.locator("#routes-scroll-hint").is_visible()
    assert "scrolls sideways" in page.inner_text("#routes-scroll-hint")
    screenshots(page, "routes-list-390")
    wrap.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    # the table scrolls from the keyboard too (scrolling may be animated: wait for it)
    wait_until(lambda: wrap.evaluate("w => w.scrollLeft") > 0, 15, "the routes table to scroll from the keyboard")

    for url, name in (("/audit/", "audit"), ("/tenants/shop/", "tenant-detail"), ("/pools/new/", "pool-form")):
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(url)
        screenshots(page, f"{name}-1280")
        page.set_viewport_size(PHONE)
        page.reload()
        screenshots(page, f"{name}-390")
    assert page.get_by_label("Connect timeout").is_visible()  # the pool form, on the phone
    assert page.locator("#id_connect_timeout-unit").inner_text() == "seconds"
    assert page.get_by_label("TLS server name").is_visible()
