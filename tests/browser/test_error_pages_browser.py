"""Error pages in a real browser: a tenant editor opens a route's "Error pages", types a
503 page and sees it live in the sandboxed preview (sample values filled in), publishes
it, and the route page says so; staff open the platform "Error pages" from Routes, where
an unknown placeholder shows the refusal in the preview. Screenshots at 1280 and 390 px:
route-error-pages-{1280,390}.png, error-pages-{1280,390}.png."""
from __future__ import annotations

import json
import re
import time

import pytest

from .test_dashboard_browser import sign_in

pytestmark = pytest.mark.chromium

PAGE = ("<div style=\"font-family:sans-serif;padding:1rem;background:#fef3c7\"><h1>{{status}} {{reason}}</h1>"
        "<p>We are on it: {{details}}.</p><p>Quote <b>{{request_id}}</b></p></div>")


def wait_frame(page, status: int, text: str, timeout: float = 30.0) -> str:
    """The preview frame's text once it shows ``text`` (it reloads after each edit)."""
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        try:
            seen = page.frame_locator(f"#frame-{status}").locator("body").inner_text(timeout=2000)
        except Exception:  # noqa: BLE001 - the frame is between two documents: poll again
            seen = ""
        if text in seen:
            return seen
        page.wait_for_timeout(100)
    raise AssertionError(f"the {status} preview never showed {text!r}; it shows {seen!r}")


def shoot(page, screenshots, name: str, width: int, statuses) -> None:
    """A screenshot with the whole page in the viewport (frames outside it are not painted
    in a full-page capture), once every preview shows its page."""
    page.set_viewport_size({"width": width, "height": 900})
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": width, "height": min(height, 8000)})
    for status in statuses:
        wait_frame(page, status, "3f2a9c1e7b4d4e0f")
    screenshots(page, name)
    page.set_viewport_size({"width": 1280, "height": 900})


def test_an_editor_sets_a_route_page_with_a_live_preview(page, screenshots, run_django):
    sign_in(page, "shop-editor")
    page.goto("/routes/")
    page.click("a:text-is('shop-api')")
    page.wait_for_url(re.compile(r"/routes/\d+/$"))
    page.click("#route-error-pages a")
    page.wait_for_url(re.compile(r"/routes/\d+/error-pages/$"))
    assert page.locator("#id_page_404").count() == 0  # a route has no 404 page
    for status in (403, 429, 502, 504):  # each default page is previewed as the page loads
        wait_frame(page, status, "Request ID: 3f2a9c1e7b4d4e0f")
    page.fill("#id_page_503", PAGE)
    text = wait_frame(page, 503, "Quote 3f2a9c1e7b4d4e0f")
    assert "503 Service Unavailable" in text and "{{" not in text
    for width in (1280, 390):
        shoot(page, screenshots, f"route-error-pages-{width}", width, (403, 429, 502, 503, 504))
    page.click("#preview-button")
    page.fill("#preview textarea[name=note]", "branded 503")
    page.click("#publish-button")
    page.wait_for_selector("#route-error-pages")
    assert "own for 503" in page.locator("#route-error-pages").inner_text()
    stored = json.loads(run_django(
        "import json; from controlplane.proxy.models import Route; "
        "print(json.dumps(Route.objects.get(name='shop-api').error_pages))").strip().splitlines()[-1])
    assert stored == {"503": PAGE}
    run_django("from controlplane.proxy import services; from controlplane.proxy.models import Route; "
               "services.update_route(services.Actor.system(), Route.objects.get(name='shop-api'), error_pages={})")


def test_staff_edit_the_platform_pages_and_see_refusals_in_the_preview(page, screenshots, run_django):
    sign_in(page, "admin")
    page.goto("/routes/")
    page.click("#platform-error-pages")
    page.wait_for_url(re.compile(r"/error-pages/$"))
    for status in (403, 404, 429, 502, 503, 504):
        assert page.locator(f"#id_page_{status}").count() == 1
    wait_frame(page, 404, "404 Not Found")  # the default page, previewed as the page loads
    page.fill("#id_page_502", "<p>{{ nope }}</p>")
    wait_frame(page, 502, "unknown placeholder {{nope}}")
    page.fill("#id_page_502", "")
    page.fill("#id_page_404", "<h1 style=\"color:#1d4ed8\">Nothing here</h1><p>{{details}} ({{request_id}})</p>")
    wait_frame(page, 404, "no route matches this request (3f2a9c1e7b4d4e0f)")
    for width in (1280, 390):
        shoot(page, screenshots, f"error-pages-{width}", width, (403, 404, 429, 502, 503, 504))
    page.click("#preview-button")
    page.click("#publish-button")
    page.wait_for_selector("text=saved")
    stored = run_django("from controlplane.proxy.models import ErrorPage; "
                        "print(sorted(ErrorPage.objects.values_list('status', flat=True)))").strip().splitlines()[-1]
    assert stored == "[404]"
    run_django("from controlplane.proxy.models import ErrorPage; from controlplane.proxy import errorpages, services; "
               "errorpages.delete_error_page(services.Actor.system(), ErrorPage.objects.get(status=404))")
