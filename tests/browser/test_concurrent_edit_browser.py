"""Two people edit the same route in two browsers: the second save is refused with
the conflict named, and saving the re-shown form again overwrites deliberately."""
from __future__ import annotations

import re

import pytest

from .test_dashboard_browser import sign_in

pytestmark = pytest.mark.chromium

CREATE_ROUTE = """
from controlplane.proxy import services
from controlplane.proxy.models import Pool
from tests.controlplane import helpers as h
route = services.create_route(h.ACTOR, name="race", hosts=["race.localhost"], pool=Pool.objects.get(name="demo-pool"))
print(route.pk)
"""


@pytest.fixture
def second_page(browser, live_server_url):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live_server_url)
    pg = context.new_page()
    pg.set_default_timeout(15000)
    yield pg
    context.close()


def save(page):
    page.click("#preview-button")
    page.wait_for_selector("#preview")
    page.click("#publish-button")


def test_the_second_of_two_concurrent_route_edits_is_refused_then_overwrites(page, second_page, run_django,
                                                                            screenshots):
    pk = int(run_django(CREATE_ROUTE).strip().splitlines()[-1])
    for pg in (page, second_page):
        sign_in(pg, "admin")
        pg.goto(f"/routes/{pk}/edit/")

    page.fill("#id_priority", "5")
    save(page)
    page.wait_for_url(re.compile(rf"/routes/{pk}/$"))

    second_page.fill("#id_name", "race-renamed")
    second_page.click("#preview-button")
    error = second_page.wait_for_selector("ul.nonfield li")
    assert "Someone else changed this route while you were editing it" in error.inner_text()
    assert "priority" in error.inner_text()
    assert second_page.input_value("#id_name") == "race-renamed"
    screenshots(second_page, "route-edit-conflict")
    assert "race-renamed" not in run_django(f"from controlplane.proxy.models import Route; "
                                            f"print(Route.objects.get(pk={pk}).name)")

    save(second_page)
    second_page.wait_for_url(re.compile(rf"/routes/{pk}/$"))
    assert "race-renamed" in run_django(f"from controlplane.proxy.models import Route; "
                                        f"print(Route.objects.get(pk={pk}).name)")
