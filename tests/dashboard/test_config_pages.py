"""The Config page: download the export, upload a file, see the dry-run diff, apply
exactly what was previewed; scoped like the API (a tenant owner: its own tenant only)."""
from __future__ import annotations

import json
import re
from html import unescape

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from controlplane.proxy import services
from controlplane.proxy.models import Route
from controlplane.publishing.models import ConfigVersion
from tests.controlplane.helpers import ACTOR

pytestmark = pytest.mark.django_db

PAGE, EXPORT, APPLY = reverse("dashboard:config"), reverse("dashboard:config_export"), reverse("dashboard:config_apply")


def download(client, tenant="", fmt="yaml") -> dict:
    response = client.get(EXPORT, {"tenant": tenant, "format": fmt})
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    return yaml.safe_load(response.content)


def route_item(data: dict, name: str) -> dict:
    return next(i for i in data["routes"] if i["name"] == name)


def preview(client, data: dict | str, scope: str = "", prune: bool = False, paste: bool = False):
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    form = {"scope": scope, **({"prune": "on"} if prune else {})}
    if paste:
        form["text"] = text
    else:
        form["file"] = SimpleUploadedFile("switchyard.yaml", text.encode(), content_type="application/yaml")
    return client.post(PAGE, form)


def apply_form(response) -> dict:
    """The hidden fields of the preview's Apply form, as the browser would send them."""
    html = response.content.decode()
    form = re.search(r'<form[^>]*id="apply-form".*?</form>', html, re.S)
    assert form, "no Apply form on the preview"
    return {name: unescape(value) for name, value in re.findall(r'name="(\w+)" value="([^"]*)"', form.group(0))
            if name != "csrfmiddlewaretoken"}


def text(response) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", response.content.decode())))


def test_it_shows_config_in_the_nav_to_staff_and_owners_only(world, login):
    for who in ("staff", "shop-owner"):
        assert 'href="/config/"' in login(world["users"][who]).get("/").content.decode()
        assert login(world["users"][who]).get(PAGE).status_code == 200
    for who in ("shop-editor", "shop-viewer"):
        client = login(world["users"][who])
        assert 'href="/config/"' not in client.get("/").content.decode()
        assert client.get(PAGE).status_code == 403
        assert client.get(EXPORT, {"tenant": "shop"}).status_code == 403


def test_it_downloads_yaml_and_json_within_the_users_scope(world, login):
    staff = login(world["users"]["staff"])
    everything = download(staff)
    assert {"shop-api", "acme-api", "platform-api"} <= {r["name"] for r in everything["routes"]}
    as_json = json.loads(staff.get(EXPORT, {"format": "json"}).content)
    assert as_json == everything
    owner = login(world["users"]["shop-owner"])
    own = download(owner, "shop")
    assert own["tenant"] == "shop" and {r["name"] for r in own["routes"]} == {"shop-api"}
    assert download(owner) == own   # an owner's default scope is its tenant, never the platform
    assert owner.get(EXPORT, {"tenant": "acme"}).status_code == 404


def test_upload_shows_the_dry_run_diff_and_apply_makes_one_version_with_the_note(world, login):
    client = login(world["users"]["staff"])
    data = download(client)
    route_item(data, "shop-api")["priority"] = 42
    data["routes"] = [r for r in data["routes"] if r["name"] != "acme-api"]
    versions = ConfigVersion.objects.count()

    shown = preview(client, data, prune=True)
    assert shown.status_code == 200
    page = text(shown)
    assert "1 to change" in page and "1 to delete" in page
    assert "changed route shop/shop-api" in page and "priority 0 42" in page
    assert "deleted route acme/acme-api" in page
    assert Route.objects.get(name="shop-api").priority == 0 and ConfigVersion.objects.count() == versions

    form = apply_form(shown)
    done = client.post(APPLY, {**form, "note": "tune shop"}, follow=True)
    assert "Applied: 0 created, 1 changed, 1 deleted; version" in text(done)
    assert Route.objects.get(name="shop-api").priority == 42
    assert not Route.objects.filter(name="acme-api").exists()
    assert ConfigVersion.objects.count() == versions + 1
    assert ConfigVersion.objects.order_by("-number").first().note == "tune shop"
    again = client.post(APPLY, {**form, "note": "tune shop"}, follow=True)   # the same form twice
    assert "nothing was applied" in text(again) and ConfigVersion.objects.count() == versions + 1


def test_a_change_made_after_the_preview_shows_the_new_diff_instead_of_applying(world, login):
    client = login(world["users"]["staff"])
    data = download(client)
    route_item(data, "shop-api")["priority"] = 5
    form = apply_form(preview(client, data))
    services.update_route(ACTOR, world["objs"]["shop"]["route"], path="/other")   # someone else, meanwhile
    versions = ConfigVersion.objects.count()

    stale = client.post(APPLY, {**form, "note": "late"})
    page = text(stale)
    assert "changed since your preview" in page and "nothing was applied" in page
    assert "path /other /" in page   # the new diff: the file would undo the other change too
    route = Route.objects.get(name="shop-api")
    assert (route.priority, route.path) == (0, "/other") and ConfigVersion.objects.count() == versions
    fresh = apply_form(stale)
    assert fresh["guard"] != form["guard"]
    client.post(APPLY, {**fresh, "note": "after review"})
    route.refresh_from_db()
    assert (route.priority, route.path) == (5, "/") and ConfigVersion.objects.count() == versions + 1


def test_an_apply_of_another_file_than_the_previewed_one_is_refused(world, login):
    client = login(world["users"]["staff"])
    data = download(client)
    route_item(data, "shop-api")["priority"] = 5
    form = apply_form(preview(client, data))
    route_item(data, "shop-api")["priority"] = 6
    other = yaml.safe_dump(data, sort_keys=False)
    import base64
    client.post(APPLY, {**form, "document": base64.b64encode(other.encode()).decode(), "note": "swap"})
    assert Route.objects.get(name="shop-api").priority == 0


def test_problems_are_listed_by_file_path_and_object_and_nothing_can_be_applied(world, login):
    client = login(world["users"]["staff"])
    data = download(client)
    route_item(data, "shop-api")["pool"] = "no-such-pool"
    route_item(data, "acme-api")["priority"] = "high"
    shown = preview(client, data, paste=True)
    page = text(shown)
    assert "2 problems" in page
    rows = re.findall(r"<tr data-problem>(.*?)</tr>", shown.content.decode(), re.S)
    cells = [text_of(row) for row in rows]
    assert any("routes[" in c and "route acme/acme-api" in c and "must be an integer" in c for c in cells), cells
    assert any("route shop/shop-api" in c and "no-such-pool" in c for c in cells), cells
    assert 'id="apply-form"' not in shown.content.decode()


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def test_an_owner_applies_its_own_tenant_only(world, login):
    staff = login(world["users"]["staff"])
    everything = download(staff)
    owner = login(world["users"]["shop-owner"])
    own = download(owner)
    route_item(own, "shop-api")["priority"] = 9
    done = owner.post(APPLY, {**apply_form(preview(owner, own)), "note": "owner"}, follow=True)
    assert "Applied" in text(done) and Route.objects.get(name="shop-api").priority == 9

    foreign = {"switchyard": 1, "routes": [{**route_item(everything, "acme-api"), "priority": 3}]}
    refused = text(preview(owner, foreign))
    assert "route acme/acme-api" in refused and "outside this file's scope" in refused
    assert Route.objects.get(name="acme-api").priority == 0
    assert owner.post(PAGE, {"scope": "acme", "text": "switchyard: 1"}).status_code in (400, 404)


def test_an_empty_upload_is_an_error_on_the_form(world, login):
    response = login(world["users"]["staff"]).post(PAGE, {"scope": ""})
    assert response.status_code == 400 and "choose a file or paste its text" in text(response)
