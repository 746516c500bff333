"""Every page renders; tenant scoping on every list and object URL; roles."""
from __future__ import annotations

import pytest
from django.urls import reverse

from controlplane.publishing import publisher
from controlplane.tenancy.models import Membership

pytestmark = pytest.mark.django_db


def list_urls():
    return ["dashboard:overview", "dashboard:routes", "dashboard:pools", "dashboard:certificates",
            "dashboard:nodes", "dashboard:changes", "dashboard:audit", "dashboard:alerts"]


def object_urls(objs, slug):
    o = objs[slug]
    return [
        reverse("dashboard:route", args=[o["route"].pk]),
        reverse("dashboard:route_edit", args=[o["route"].pk]),
        reverse("dashboard:route_delete", args=[o["route"].pk]),
        reverse("dashboard:pool", args=[o["pool"].pk]),
        reverse("dashboard:pool_edit", args=[o["pool"].pk]),
        reverse("dashboard:pool_delete", args=[o["pool"].pk]),
        reverse("dashboard:certificate", args=[o["cert"].pk]),
        reverse("dashboard:certificate_delete", args=[o["cert"].pk]),
        reverse("dashboard:channel_edit", args=[o["channel"].pk]),
        reverse("dashboard:tenant", args=[slug]),
    ]


def test_it_redirects_anonymous_users_to_login(client, world):
    for name in list_urls():
        response = client.get(reverse(name))
        assert response.status_code == 302 and response["Location"].startswith("/login/"), name


def test_it_renders_every_page_for_staff(world, login):
    c = login(world["users"]["staff"])
    urls = [reverse(n) for n in list_urls()]
    urls += [reverse("dashboard:tenants"), reverse("dashboard:tenant_new"), reverse("dashboard:route_new"),
             reverse("dashboard:pool_new"), reverse("dashboard:certificate_new"), reverse("dashboard:channel_new"),
             reverse("dashboard:node", args=[world["node"].pk]),
             reverse("dashboard:route", args=[world["platform_route"].pk])]
    urls += object_urls(world["objs"], "shop") + object_urls(world["objs"], "acme")
    current = publisher.current_version().number
    urls += [reverse("dashboard:change", args=[current]), reverse("dashboard:change", args=[1]),
             reverse("dashboard:change_diff") + f"?a=1&b={current}"]
    for url in urls:
        response = c.get(url)
        assert response.status_code == 200, (url, response.status_code)
        assert b"Traceback" not in response.content


def test_it_shows_the_overview_with_nodes_and_unhealthy_targets(world, login):
    target = world["objs"]["shop"]["target"]
    target.healthy, target.health_reason = False, "connection refused"
    target.save()
    c = login(world["users"]["staff"])
    body = c.get("/").content.decode()
    assert "edge-1" in body and "connection refused" in body and "shop-cert" in body or "Certificates expiring" in body


@pytest.mark.parametrize("role", ["owner", "editor", "viewer"])
def test_it_hides_other_tenants_objects_from_every_role(world, login, role):
    c = login(world["users"][f"shop-{role}"])
    for url in object_urls(world["objs"], "acme"):
        assert c.get(url).status_code == 404, url
        assert c.post(url, {"note": "x"}).status_code in (404, 405), url
    assert c.get(reverse("dashboard:route", args=[world["platform_route"].pk])).status_code == 404
    for name in list_urls():
        body = c.get(reverse(name)).content.decode()
        for secret in ("acme-api", "acme-pool", "acme-cert", "acme-mail", "acme target down", "platform-api"):
            assert secret not in body, (name, secret)
    # own objects are visible
    for url in object_urls(world["objs"], "shop")[:1] + [reverse("dashboard:pool", args=[world["objs"]["shop"]["pool"].pk])]:
        assert c.get(url).status_code == 200


def test_it_hides_tenant_admin_pages_from_members(world, login):
    c = login(world["users"]["shop-owner"])
    assert c.get(reverse("dashboard:tenants")).status_code == 404
    assert c.get(reverse("dashboard:tenant_new")).status_code == 404
    assert c.get(reverse("dashboard:tenant", args=["shop"])).status_code == 200
    assert c.post(reverse("dashboard:tenant_update", args=["shop"]), {"name": "x"}).status_code == 403
    assert c.post(reverse("dashboard:delegation_add", args=["shop"]), {"suffix": "evil.com"}).status_code == 403


def test_it_refuses_writes_from_viewers(world, login):
    c = login(world["users"]["shop-viewer"])
    o = world["objs"]["shop"]
    before = publisher.current_version().number
    assert c.get(reverse("dashboard:route_new")).status_code == 403
    assert c.post(reverse("dashboard:route_new"), {"name": "x"}).status_code == 403
    assert c.post(reverse("dashboard:pool_new"), {"name": "x"}).status_code == 403
    assert c.post(reverse("dashboard:certificate_new"), {"name": "x"}).status_code == 403
    assert c.post(reverse("dashboard:route_edit", args=[o["route"].pk]), {"name": "x"}).status_code == 403
    assert c.post(reverse("dashboard:route_delete", args=[o["route"].pk]), {}).status_code == 403
    assert c.post(reverse("dashboard:pool_delete", args=[o["pool"].pk]), {}).status_code == 403
    assert c.post(reverse("dashboard:certificate_delete", args=[o["cert"].pk]), {}).status_code == 403
    assert c.post(reverse("dashboard:channel_delete", args=[o["channel"].pk]), {}).status_code == 403
    assert c.post(reverse("dashboard:member_add", args=["shop"]), {"username": "staff", "role": "owner"}).status_code == 403
    assert c.post(reverse("dashboard:change_rollback", args=[before]), {}).status_code in (403, 404)
    assert publisher.current_version().number == before


def test_it_lets_editors_but_not_viewers_see_edit_buttons(world, login):
    url = reverse("dashboard:route", args=[world["objs"]["shop"]["route"].pk])
    assert b"Edit</a>" in login(world["users"]["shop-editor"]).get(url).content
    assert b"Edit</a>" not in login(world["users"]["shop-viewer"]).get(url).content


def test_it_lets_only_owners_manage_members_and_tokens(world, login):
    editor = login(world["users"]["shop-editor"])
    assert editor.post(reverse("dashboard:token_issue", args=["shop"]), {"role": "viewer"}).status_code == 403
    owner = login(world["users"]["shop-owner"])
    response = owner.post(reverse("dashboard:token_issue", args=["shop"]), {"role": "viewer", "name": "ci"})
    assert response.status_code == 302
    import re
    page = owner.get(reverse("dashboard:tenant", args=["shop"])).content.decode()
    token = re.search(r'id="issued-token">(sy_[^<]+)<', page).group(1)  # shown once
    assert token not in owner.get(reverse("dashboard:tenant", args=["shop"])).content.decode()
    response = owner.post(reverse("dashboard:member_add", args=["shop"]), {"username": "acme-viewer", "role": "viewer"})
    assert response.status_code == 200 and b"invite them by e-mail" in response.content  # not one of theirs
    Membership.objects.create(user=world["users"]["shop-owner"], tenant=world["acme"], role="viewer")
    response = owner.post(reverse("dashboard:member_add", args=["shop"]), {"username": "acme-viewer", "role": "viewer"})
    assert response.status_code == 302
    assert world["users"]["acme-viewer"].memberships.filter(tenant=world["shop"]).exists()


def test_it_scopes_the_changes_page_for_tenants(world, login):
    c = login(world["users"]["shop-viewer"])
    body = c.get(reverse("dashboard:changes")).content.decode()
    acme_version = world["objs"]["acme"]["route"]
    from controlplane.audit.models import AuditEntry
    acme_numbers = set(AuditEntry.objects.filter(tenant=world["acme"]).values_list("config_version", flat=True))
    shop_numbers = set(AuditEntry.objects.filter(tenant=world["shop"]).values_list("config_version", flat=True))
    for n in acme_numbers - shop_numbers - {None}:
        assert c.get(reverse("dashboard:change", args=[n])).status_code == 404
    current = publisher.current_version().number
    diff = c.get(reverse("dashboard:change_diff") + f"?a=1&b={current}").content.decode()
    assert "acme" not in diff and "platform-api" not in diff and "shop-api" in diff
    assert acme_version.name not in body


def _traffic(route, requests, errors=0, kind="connection_refused"):
    from django.utils import timezone

    from controlplane.telemetry.models import TrafficMinute
    from dataplane import schema
    latency = [0] * schema.STATS_BUCKET_SLOTS
    latency[3] = requests
    TrafficMinute.objects.create(
        minute=timezone.now().replace(second=0, microsecond=0), route=route, tenant=route.tenant,
        requests=requests, status_2xx=requests - errors, status_5xx=errors,
        by_proxy_status={kind: errors} if errors else {}, latency=latency, upstream_latency=latency)


def test_it_shows_traffic_scoped_to_the_tenant(world, login):
    pytest.importorskip("controlplane.telemetry.queries")
    _traffic(world["objs"]["shop"]["route"], 600, errors=60)
    _traffic(world["objs"]["acme"]["route"], 6000, errors=600, kind="acme_only_error")
    staff = login(world["users"]["staff"]).get("/").content.decode()
    assert "acme_only_error" in staff and "connection_refused" in staff
    shop = login(world["users"]["shop-viewer"]).get("/").content.decode()
    assert "connection_refused" in shop and "acme_only_error" not in shop
    assert 'id="chart-all-rps"' in shop and 'id="chart-p95-routes"' in shop
    route_page = login(world["users"]["shop-viewer"]).get(
        reverse("dashboard:route", args=[world["objs"]["shop"]["route"].pk])).content.decode()
    assert "connection_refused" in route_page and "chart-route" in route_page
    routes = login(world["users"]["shop-viewer"]).get(reverse("dashboard:routes")).content.decode()
    assert "req/s" in routes


def test_it_sends_scoped_traffic_over_the_live_socket(world):
    pytest.importorskip("controlplane.telemetry.queries")
    from controlplane.dashboard.consumers import live_state
    _traffic(world["objs"]["shop"]["route"], 600, errors=60)
    _traffic(world["objs"]["acme"]["route"], 6000, errors=600, kind="acme_only_error")
    shop = live_state(world["users"]["shop-viewer"].pk)
    staff = live_state(world["users"]["staff"].pk)
    assert shop["traffic"]["requests"] == 600 and staff["traffic"]["requests"] == 6600
    assert "acme_only_error" not in str(shop)


def test_pool_page_shows_passive_ejections_beside_active_health(world, login):
    import datetime as dt
    from django.utils import timezone
    from controlplane.telemetry.models import TargetEjection
    o = world["objs"]["shop"]
    until = timezone.now() + dt.timedelta(seconds=30)
    TargetEjection.objects.create(node=world["node"], target=o["target"], until=until, reported=timezone.now())
    c = login(world["users"]["shop-viewer"])
    body = c.get(reverse("dashboard:pool", args=[o["pool"].pk])).content.decode()
    assert "healthy</span>" in body  # the active state stays
    assert f"by node edge-1 until {timezone.localtime(until):%H:%M:%S}" in body
    # an ejection that has ended is not shown
    TargetEjection.objects.update(until=timezone.now() - dt.timedelta(seconds=1))
    body = c.get(reverse("dashboard:pool", args=[o["pool"].pk])).content.decode()
    assert "by node edge-1" not in body
