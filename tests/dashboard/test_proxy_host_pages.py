"""The "New proxy host" page: reachable from the routes list and the overview, one
preview of the pool and the route it creates, one publish (one version), the
service's messages on the fields, and a tenant's choices limited to its own."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse

from controlplane.proxy.models import Pool, Route
from controlplane.publishing import publisher
from controlplane.publishing.models import ConfigVersion
from tests.controlplane import helpers as h

from .test_forms import errors_of

pytestmark = pytest.mark.django_db
URL = "/proxy-hosts/new/"


def post(world, **overrides) -> dict:
    data = {"tenant": str(world["shop"].pk), "hosts": "app.shop.example.com",
            "upstreams": f"http://{h.PUBLIC_IP}:8080\nhttp://{h.PUBLIC_IP}:8081", "tls": "", "name": "", "note": ""}
    data.update(overrides)
    return data


def test_the_url_is_named():
    assert reverse("dashboard:proxy_host_new") == URL


def test_the_routes_list_and_the_overview_link_to_it_for_editors_only(world, login):
    c = login(world["users"]["shop-editor"])
    for page in (reverse("dashboard:routes"), reverse("dashboard:overview")):
        html = c.get(page).content.decode()
        assert f'href="{URL}"' in html and "New proxy host" in html, page
    viewer = login(world["users"]["shop-viewer"])
    for page in (reverse("dashboard:routes"), reverse("dashboard:overview")):
        assert "New proxy host" not in viewer.get(page).content.decode(), page
    assert viewer.get(URL).status_code == 403


def test_the_preview_shows_the_pool_and_the_route_and_stores_nothing(world, login):
    c = login(world["users"]["shop-editor"])
    versions = ConfigVersion.objects.count()
    html = c.post(URL, post(world, _action="preview")).content.decode()
    assert 'data-diff-item="pool:shop/app.shop.example.com"' in html
    assert 'data-diff-item="route:shop/app.shop.example.com"' in html
    assert 'id="publish-button"' in html
    assert ConfigVersion.objects.count() == versions
    assert not Route.objects.filter(name="app.shop.example.com").exists()
    assert not Pool.objects.filter(name="app.shop.example.com").exists()


def test_publishing_the_preview_makes_one_version_and_opens_the_route(world, login):
    c = login(world["users"]["shop-editor"])
    before = publisher.current_version().number
    html = c.post(URL, post(world, _action="preview")).content.decode()
    digest = re.search(r'name="digest" value="([0-9a-f]{64})"', html).group(1)
    response = c.post(URL, post(world, _action="publish", digest=digest, note="new app"), follow=True)
    route = Route.objects.get(tenant=world["shop"], name="app.shop.example.com")
    assert response.redirect_chain[-1][0] == reverse("dashboard:route", args=[route.pk])
    assert "New proxy host: saved and published." in response.content.decode()
    version = publisher.current_version()
    assert version.number == before + 1 and version.note == "new app"
    assert sorted(t.port for t in route.pool.targets.all()) == [8080, 8081]
    assert route.pool.name == "app.shop.example.com" and route.pool.tenant == world["shop"]


def test_the_services_messages_land_on_the_fields(world, login):
    c = login(world["users"]["shop-editor"])
    html = c.post(URL, post(world, hosts="www.elsewhere.org", upstreams="ftp://192.0.2.1",
                            https_redirect="on")).content.decode()
    shown = errors_of(html)
    assert shown["hosts"] == ["www.elsewhere.org is outside tenant shop's delegations"]
    assert shown["upstreams"] == ["ftp://192.0.2.1: only http:// and https:// upstreams are possible here"]
    assert shown["https_redirect"] == ["needs a certificate: choose one under TLS, or leave the redirect off"]
    assert 'id="publish-button"' not in html


def test_required_fields_say_so(world, login):
    c = login(world["users"]["shop-editor"])
    shown = errors_of(c.post(URL, post(world, hosts="", upstreams="")).content.decode())
    assert shown["hosts"] == ["needs at least one host name, e.g. app.example.com"]
    assert shown["upstreams"] == ["needs at least one upstream URL, e.g. http://10.0.0.5:8080"]


def test_a_tenant_sees_and_uses_only_its_own_tenant_and_certificates(world, login):
    c = login(world["users"]["shop-editor"])
    html = c.get(URL).content.decode()
    shop_cert, acme_cert = world["objs"]["shop"]["cert"], world["objs"]["acme"]["cert"]
    assert f'value="{shop_cert.pk}"' in html and f'value="{acme_cert.pk}"' not in html
    assert f'value="{world["acme"].pk}"' not in html
    shown = errors_of(c.post(URL, post(world, tenant=str(world["acme"].pk),
                                       hosts="app.acme.example.com")).content.decode())
    assert "tenant" in shown
    shown = errors_of(c.post(URL, post(world, tls=str(acme_cert.pk))).content.decode())
    assert "tls" in shown
    assert not Route.objects.filter(name__startswith="app.").exists()


def test_an_uploaded_certificate_and_the_redirect_are_used(world, login):
    c = login(world["users"]["shop-editor"])
    cert = world["objs"]["shop"]["cert"]
    data = post(world, tls=str(cert.pk), https_redirect="on", websocket="on", _action="preview")
    digest = re.search(r'name="digest" value="([0-9a-f]{64})"', c.post(URL, data).content.decode()).group(1)
    c.post(URL, {**data, "_action": "publish", "digest": digest})
    route = Route.objects.get(name="app.shop.example.com")
    assert (route.certificate_id, route.https_redirect, route.websocket) == (cert.pk, True, True)


def test_the_automatic_certificate_is_offered_only_where_acme_is_configured(world, login, settings):
    c = login(world["users"]["staff"])
    settings.SWITCHYARD_ACME_DIRECTORY = ""
    assert 'value="acme"' not in c.get(URL).content.decode()
    settings.SWITCHYARD_ACME_DIRECTORY = "https://ca.invalid/dir"
    html = c.get(URL).content.decode()
    assert 'value="acme"' in html and "Automatic certificate (ACME" in html
