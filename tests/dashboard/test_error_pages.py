"""Errors a user can hit answer with the dashboard's own pages (navigation included), an
API client always with JSON, and every page has an icon."""
from django.contrib.staticfiles import finders
from django.urls import reverse


def test_another_tenants_object_is_the_dashboards_404_page_with_navigation(world, login):
    client = login(world["users"]["shop-owner"])
    response = client.get(reverse("dashboard:route", args=[world["objs"]["acme"]["route"].pk]))
    assert response.status_code == 404
    page = response.content.decode()
    assert "<h1>Not found</h1>" in page
    assert 'id="main-nav"' in page and "Back to the overview" in page
    assert "belongs to a tenant you are not a member of" in page


def test_an_unknown_page_is_the_404_page_signed_out_too(client, db):
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert "<h1>Not found</h1>" in response.content.decode()
    assert "<code>/no/such/page/</code>" in response.content.decode()


def test_an_unknown_api_path_is_json(client, db):
    response = client.get("/api/v1/no-such-resource/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_the_navigation_marks_the_current_section_and_offers_a_skip_link(world, login):
    page = login(world["users"]["staff"]).get(reverse("dashboard:routes")).content.decode()
    assert 'href="#content">Skip to content</a>' in page
    assert '<main id="content"' in page
    current = [line for line in page.splitlines() if 'aria-current="page"' in line]
    assert len(current) == 1 and ">Routes</a>" in current[0]


def test_favicon_ico_is_served(client, db):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"].endswith("/favicon.ico") and response["Location"].startswith("/static/")
    icon = open(finders.find("favicon.ico"), "rb").read()
    assert icon[:4] == b"\x00\x00\x01\x00"  # an ICO file
    page = client.get(reverse("dashboard:login")).content.decode()
    assert 'rel="icon"' in page
