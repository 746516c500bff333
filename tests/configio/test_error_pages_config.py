"""Error pages survive export → apply → export (a route's pages in a configuration file)
and backup → restore (the platform pages too, same sha256 as the nodes ran); a file with
a bad page is refused; checkconfig names a stored page the nodes would refuse."""
from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from controlplane.configio import backup
from controlplane.proxy import errorpages, services
from controlplane.proxy.models import ErrorPage, Route, Target
from controlplane.publishing.models import ConfigVersion, Quarantine
from tests.controlplane.helpers import ACTOR, pool, tenant

from .helpers import apply, as_data, as_text, empty_installation, exported, item

pytestmark = pytest.mark.django_db

PAGES = {"502": "<h1>{{status}}</h1><p>{{details}} {{request_id}}</p>", "503": "<p>back soon</p>"}


def shop_route():
    shop = tenant("shop")
    return services.create_route(ACTOR, tenant=shop, name="api", hosts=["api.shop.example.com"],
                                 pool=pool("web", shop), error_pages=PAGES)


def test_export_apply_export_keeps_a_routes_pages(db):
    shop_route()
    before = exported()
    assert item(as_data(before), "routes", "api", "shop")["error_pages"] == PAGES
    empty_installation()
    result = apply(before, note="rebuild")
    assert result.ok, result.problems
    assert Route.objects.get(name="api").error_pages == PAGES
    assert exported() == before
    data = as_data(before)
    item(data, "routes", "api", "shop")["error_pages"] = {"502": "{{ secret }}"}
    refused = apply(as_text(data))
    assert not refused.ok
    assert any("unknown placeholder {{secret}}" in p.message for p in refused.problems), refused.problems


def test_backup_and_restore_keep_route_and_platform_pages(db):
    shop_route()
    errorpages.save_error_page(ACTOR, 404, "<p>nothing here {{request_id}}</p>")
    latest = ConfigVersion.objects.latest("number")
    assert latest.snapshot["error_pages"] == {"404": "<p>nothing here {{request_id}}</p>"}
    data = json.loads(json.dumps(backup.backup()))
    Quarantine.objects.all().delete()
    Target.objects.all().delete()
    ErrorPage.objects.all().delete()
    empty_installation()
    restored = backup.restore(data)
    assert restored.same_hash and restored.sha256 == latest.sha256
    assert Route.objects.get(name="api").error_pages == PAGES
    assert ErrorPage.objects.get(status=404).body == "<p>nothing here {{request_id}}</p>"


def test_checkconfig_names_a_stored_page_the_nodes_would_refuse(db):
    shop_route()
    errorpages.save_error_page(ACTOR, 404, "<p>ok</p>")
    call_command("checkconfig", stdout=StringIO())
    ErrorPage.objects.filter(status=404).update(body="<p>{{who}}</p>")  # written around the services
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("checkconfig", "--schema-only", stdout=out)
    assert "error_pages.404: unknown placeholder {{who}}" in out.getvalue()
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("checkconfig", stdout=out)
    assert "platform error page 404: body: unknown placeholder {{who}}" in out.getvalue()
