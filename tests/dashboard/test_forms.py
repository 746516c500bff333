"""Forms show the service's own messages; the preview shows the diff and stores
nothing; confirming publishes with the note; rollback; login throttling."""
from __future__ import annotations

import re

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from controlplane.audit.models import AuditEntry
from controlplane.proxy import services
from controlplane.proxy.models import Pool, Route
from controlplane.publishing import publisher
from controlplane.publishing.models import ConfigVersion
from tests.controlplane import helpers as h

from .conftest import PASSWORD

pytestmark = pytest.mark.django_db


def route_post(world, **overrides):
    o = world["objs"]["shop"]
    data = {"tenant": str(world["shop"].pk), "name": "checkout", "hosts": "checkout.shop.example.com",
            "path": "/", "path_type": "prefix", "methods": "", "priority": "0", "pool": str(o["pool"].pk),
            "preserve_host": "on", "max_body_size": "1048576", "hsts_max_age": "0", "enabled": "on",
            "certificate": "", "headers": "", "request_headers": "", "response_headers": ""}
    data.update(overrides)
    return data


def errors_of(html: str) -> dict[str, list[str]]:
    found = {}
    for field, block in re.findall(r'data-field-errors="([^"]+)">(.*?)</ul>', html, re.S):
        found[field] = [re.sub(r"<.*?>", "", m).replace("&#x27;", "'").replace("&amp;", "&")
                        for m in re.findall(r"<li>(.*?)</li>", block, re.S)]
    return found


def service_errors(**kwargs) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as exc:
        services.create_route(h.ACTOR, **kwargs)
    return exc.value.message_dict


def test_it_shows_the_services_messages_on_the_route_form(world, login):
    c = login(world["users"]["shop-editor"])
    o = world["objs"]["shop"]
    data = route_post(world, request_headers="set Content-Length: 5",
                      name="")
    html = c.post(reverse("dashboard:route_new"), data).content.decode()
    expected = service_errors(tenant=world["shop"], name="", hosts=["checkout.shop.example.com"], path="/",
                              path_type="prefix", pool=o["pool"].pk,
                              request_headers={"set": [{"name": "Content-Length", "value": "5"}], "add": [],
                                               "remove": []})
    shown = errors_of(html)
    assert {"name", "request_headers"} <= set(expected)
    for field, messages in expected.items():
        assert shown.get(field) == messages, (field, shown, expected)
    assert not Route.objects.filter(name="").exists()


def test_it_reports_hosts_outside_the_delegations_like_the_api(world, login):
    c = login(world["users"]["shop-editor"])
    html = c.post(reverse("dashboard:route_new"), route_post(world, hosts="www.elsewhere.org")).content.decode()
    expected = service_errors(tenant=world["shop"], name="checkout", hosts=["www.elsewhere.org"], path="/",
                              path_type="prefix", pool=world["objs"]["shop"]["pool"].pk)
    assert errors_of(html)["hosts"] == expected["hosts"]


def test_it_reports_an_overlap_with_the_same_words_as_the_api(world, login):
    c = login(world["users"]["shop-editor"])
    existing = world["objs"]["shop"]["route"]
    html = c.post(reverse("dashboard:route_new"), route_post(world, hosts=existing.hosts[0])).content.decode()
    expected = service_errors(tenant=world["shop"], name="checkout", hosts=list(existing.hosts), path="/",
                              path_type="prefix", pool=world["objs"]["shop"]["pool"].pk)
    assert errors_of(html)["hosts"] == expected["hosts"]


def test_it_shows_pool_target_policy_messages(world, login):
    c = login(world["users"]["shop-editor"])
    data = {"tenant": str(world["shop"].pk), "name": "internal", "targets": "127.0.0.1:8080",
            "algorithm": "round_robin", "hash_on": "client_ip", "connect_timeout": "5", "read_timeout": "60",
            "retries": "1", "passive_failures": "5", "passive_ejection_seconds": "30", "tls_verify": "on",
            "health_check_type": "http", "health_check_path": "/", "health_check_method": "GET",
            "health_check_expected_statuses": "200-399", "health_check_interval": "5",
            "health_check_timeout": "2", "healthy_threshold": "2", "unhealthy_threshold": "3"}
    html = c.post(reverse("dashboard:pool_new"), data).content.decode()
    with pytest.raises(ValidationError) as exc:
        services.create_pool(h.ACTOR, tenant=world["shop"], name="internal",
                             targets=[{"host": "127.0.0.1", "port": 8080}])
    assert errors_of(html)["targets"] == exc.value.message_dict["targets"]
    assert not Pool.objects.filter(name="internal").exists()


def test_it_previews_the_diff_without_storing_anything(world, login):
    c = login(world["users"]["shop-editor"])
    versions, audits, routes = ConfigVersion.objects.count(), AuditEntry.objects.count(), Route.objects.count()
    html = c.post(reverse("dashboard:route_new"), route_post(world, _action="preview")).content.decode()
    assert 'data-diff-item="route:shop/checkout"' in html
    assert "checkout.shop.example.com" in html
    assert (ConfigVersion.objects.count(), AuditEntry.objects.count(), Route.objects.count()) == \
        (versions, audits, routes)
    digest = re.search(r'name="digest" value="([0-9a-f]{64})"', html).group(1)

    response = c.post(reverse("dashboard:route_new"),
                      route_post(world, _action="publish", digest=digest, note="launch checkout"))
    assert response.status_code == 302
    route = Route.objects.get(name="checkout")
    assert response["Location"] == reverse("dashboard:route", args=[route.pk])
    version = publisher.current_version()
    assert version.note == "launch checkout" and version.author == "shop-editor"
    assert AuditEntry.objects.filter(object_type="route", object_id=str(route.pk), note="launch checkout").exists()


def test_it_asks_again_when_the_config_changed_since_the_preview(world, login):
    c = login(world["users"]["shop-editor"])
    before = ConfigVersion.objects.count()
    html = c.post(reverse("dashboard:route_new"),
                  route_post(world, _action="publish", digest="0" * 64)).content.decode()
    assert "changed since the preview" in html and 'name="digest"' in html
    assert ConfigVersion.objects.count() == before


def test_it_previews_an_edit_and_a_delete(world, login):
    c = login(world["users"]["shop-editor"])
    route = world["objs"]["shop"]["route"]
    data = route_post(world, name=route.name, hosts="\n".join(route.hosts), path="/v2")
    html = c.post(reverse("dashboard:route_edit", args=[route.pk]), data).content.decode()
    assert 'data-diff-item="route:shop/shop-api"' in html and "/v2" in html
    route.refresh_from_db()
    assert route.path == "/"
    html = c.get(reverse("dashboard:route_delete", args=[route.pk])).content.decode()
    assert "removed" in html
    digest = re.search(r'name="digest" value="([0-9a-f]{64})"', html).group(1)
    response = c.post(reverse("dashboard:route_delete", args=[route.pk]), {"digest": digest, "note": "bye"})
    assert response.status_code == 302
    assert not Route.objects.filter(pk=route.pk).exists()
    assert publisher.current_version().note == "bye"


def test_it_refuses_to_delete_a_pool_in_use_with_the_services_message(world, login):
    c = login(world["users"]["shop-editor"])
    pool = world["objs"]["shop"]["pool"]
    html = c.get(reverse("dashboard:pool_delete", args=[pool.pk])).content.decode()
    with pytest.raises(ValidationError) as exc:
        services.delete_pool(h.ACTOR, pool)
    for message in exc.value.messages:
        assert message in html.replace("&#x27;", "'")


def test_it_rolls_back_in_one_click(world, login):
    c = login(world["users"]["staff"])
    route = world["objs"]["shop"]["route"]
    target = publisher.current_version().number
    services.update_route(h.ACTOR, route, path="/moved")
    assert publisher.current_version().number == target + 1
    html = c.get(reverse("dashboard:changes")).content.decode()
    assert f'data-rollback="{target}"' in html
    response = c.post(reverse("dashboard:change_rollback", args=[target]), {"note": "bad move"})
    assert response.status_code == 302
    live = publisher.current_version()
    assert live.rolled_back_from == target and live.number == target + 2
    route.refresh_from_db()
    assert route.path == "/"
    assert "Rolled back to version" in c.get(reverse("dashboard:changes")).content.decode()


def test_it_refuses_rollback_to_tenant_members(world, login):
    c = login(world["users"]["shop-owner"])
    number = publisher.current_version().number
    assert c.post(reverse("dashboard:change_rollback", args=[1]), {}).status_code in (403, 404)
    assert publisher.current_version().number == number


def test_it_shows_the_diff_between_two_versions(world, login):
    c = login(world["users"]["staff"])
    html = c.get(reverse("dashboard:change_diff") + "?a=1&b=%d" % publisher.current_version().number).content.decode()
    assert 'data-diff-item="route:acme/acme-api"' in html and 'data-diff-item="route:shop/shop-api"' in html


def test_it_uploads_a_certificate_and_shows_its_messages(world, login):
    c = login(world["users"]["shop-editor"])
    pem, key = h.issue("new.shop.example.com")
    response = c.post(reverse("dashboard:certificate_new"), {"tenant": str(world["shop"].pk), "name": "new",
                                                               "certificate_pem": pem, "private_key_pem": key})
    assert response.status_code == 302
    other_pem, other_key = h.issue("x.shop.example.com")
    html = c.post(reverse("dashboard:certificate_new"), {"tenant": str(world["shop"].pk), "name": "mismatch",
                                                           "certificate_pem": pem,
                                                           "private_key_pem": other_key}).content.decode()
    from controlplane.certs.services import upload_certificate
    with pytest.raises(ValidationError) as exc:
        upload_certificate(h.ACTOR, tenant=world["shop"], name="mismatch", certificate_pem=pem,
                           private_key_pem=other_key)
    shown = errors_of(html)
    for field, messages in exc.value.message_dict.items():
        assert shown[field] == messages
    assert "PRIVATE KEY" not in html.split("<textarea")[-1] or other_key not in html


def test_it_throttles_logins_after_five_failures(world, client):
    for _ in range(5):
        response = client.post(reverse("dashboard:login"), {"username": "staff", "password": "wrong"})
        assert response.status_code == 200
    response = client.post(reverse("dashboard:login"), {"username": "staff", "password": PASSWORD})
    assert response.status_code == 429
    assert b"Too many failed sign-in attempts" in response.content
    # another user from the same address is not affected
    response = client.post(reverse("dashboard:login"), {"username": "shop-owner", "password": PASSWORD})
    assert response.status_code == 302


def test_it_logs_in_and_out_with_csrf(world):
    from django.test import Client
    c = Client(enforce_csrf_checks=True)
    page = c.get(reverse("dashboard:login")).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert c.post(reverse("dashboard:login"), {"username": "staff", "password": PASSWORD}).status_code == 403
    response = c.post(reverse("dashboard:login"), {"username": "staff", "password": PASSWORD,
                                                   "csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response["Location"] == "/"
    assert c.get("/").status_code == 200
