"""The Django admin saves through the same validation → publish → audit path."""
import pytest
from django.contrib.auth import get_user_model

from controlplane.audit.models import AuditEntry
from controlplane.proxy.models import Certificate, Pool, Route
from controlplane.publishing.models import ConfigVersion, Node
from controlplane.tenancy.models import Delegation, Tenant

from .helpers import issue, pool, route, tenant

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def encryption_key(settings):
    settings.SWITCHYARD_ENCRYPTION_KEY = "test-encryption-key"


@pytest.fixture
def staff(client):
    user = get_user_model().objects.create_superuser("root", password="pw-123456")
    client.force_login(user)
    return client


def route_form(pool_id, **overrides):
    data = {"name": "api", "tenant": "", "enabled": "on", "hosts": "api.localhost", "path": "/",
            "path_type": "prefix", "methods": "", "headers": "[]", "priority": "0", "pool": str(pool_id),
            "preserve_host": "on", "request_headers": "{}", "response_headers": "{}",
            "max_body_size": "1048576", "certificate": "", "hsts_max_age": "0", "change_note": "via admin"}
    data.update(overrides)
    return data


def inline(prefix, rows, initial=0):
    data = {f"{prefix}-TOTAL_FORMS": str(len(rows)), f"{prefix}-INITIAL_FORMS": str(initial),
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}
    for i, row in enumerate(rows):
        data.update({f"{prefix}-{i}-{k}": v for k, v in row.items()})
    return data


def test_it_adds_a_route_and_stores_a_version(staff):
    web = pool("web")
    count = ConfigVersion.objects.count()
    response = staff.post("/admin/proxy/route/add/", route_form(web.pk, hosts="API.localhost.\nb.localhost"))
    assert response.status_code == 302, response.content
    r = Route.objects.get()
    assert r.hosts == ["api.localhost", "b.localhost"]
    assert ConfigVersion.objects.count() == count + 1
    latest = ConfigVersion.objects.latest()
    assert latest.note == "via admin" and latest.author == "root"
    entry = AuditEntry.objects.get(object_type="route")
    assert (entry.actor, entry.action, entry.note) == ("root", "create", "via admin")


def test_it_shows_a_refused_route_and_stores_nothing(staff):
    shop = tenant("shop")
    web = pool("web", shop)
    count = ConfigVersion.objects.count()
    response = staff.post("/admin/proxy/route/add/", route_form(web.pk, tenant=str(shop.pk),
                                                                hosts="demo.example.com"))
    assert response.status_code == 200
    assert "demo.example.com is outside tenant shop&#x27;s delegations" in response.content.decode()
    assert not Route.objects.exists() and ConfigVersion.objects.count() == count
    assert not AuditEntry.objects.filter(object_type="route").exists()


def test_it_changes_a_route_through_the_service(staff):
    r = route("api")
    response = staff.post(f"/admin/proxy/route/{r.pk}/change/", route_form(r.pool_id, path="/v2"))
    assert response.status_code == 302
    assert ConfigVersion.objects.latest().snapshot["routes"][0]["path"] == "/v2"
    assert AuditEntry.objects.filter(object_type="route", action="update").exists()


def test_it_refuses_a_dangerous_header_rule_in_the_admin(staff):
    r = route("api")
    form = route_form(r.pool_id, request_headers='{"set": [{"name": "Host", "value": "x"}]}')
    response = staff.post(f"/admin/proxy/route/{r.pk}/change/", form)
    assert response.status_code == 200
    assert "header rules may not touch Host" in response.content.decode()
    r.refresh_from_db()
    assert r.request_headers == {}


def pool_form(name="web", targets=(), initial=0, **overrides):
    data = {"name": name, "tenant": "", "algorithm": "round_robin", "hash_on": "client_ip", "hash_key": "",
            "sticky_cookie": "", "connect_timeout": "5", "read_timeout": "60", "retries": "1",
            "passive_failures": "5", "passive_ejection_seconds": "30", "tls_verify": "on", "tls_ca_pem": "",
            "tls_sni": "", "health_check_type": "http", "health_check_path": "/", "health_check_method": "GET",
            "health_check_expected_statuses": "200-399", "health_check_host": "", "health_check_interval": "5",
            "health_check_timeout": "2", "healthy_threshold": "2", "unhealthy_threshold": "3", "change_note": ""}
    data.update(overrides)
    data.update(inline("targets", list(targets), initial))
    return data


def test_it_adds_a_pool_with_its_targets(staff):
    response = staff.post("/admin/proxy/pool/add/", pool_form(targets=[
        {"host": "127.1", "port": "8080", "weight": "1", "state": "enabled"}]))
    assert response.status_code == 302, response.content
    assert list(Pool.objects.get().targets.values_list("host", "port")) == [("127.0.0.1", 8080)]


def test_it_changes_pool_targets_in_the_inline(staff):
    r = route("api")
    old = r.pool.targets.get()
    rows = [{"id": str(old.pk), "pool": str(r.pool_id), "host": old.host, "port": "8080", "weight": "1",
             "state": "enabled", "DELETE": "on"},
            {"pool": str(r.pool_id), "host": "127.0.0.2", "port": "9090", "weight": "3", "state": "enabled"}]
    response = staff.post(f"/admin/proxy/pool/{r.pool_id}/change/", pool_form("api-pool", rows, initial=1))
    assert response.status_code == 302, response.content
    assert list(r.pool.targets.values_list("host", "port", "weight")) == [("127.0.0.2", 9090, 3)]
    assert ConfigVersion.objects.latest().snapshot["pools"][0]["targets"][0]["port"] == 9090


def test_it_refuses_removing_the_last_target_in_the_inline(staff):
    r = route("api")
    old = r.pool.targets.get()
    rows = [{"id": str(old.pk), "pool": str(r.pool_id), "host": old.host, "port": "8080", "weight": "1",
             "state": "enabled", "DELETE": "on"}]
    response = staff.post(f"/admin/proxy/pool/{r.pool_id}/change/", pool_form("api-pool", rows, initial=1))
    assert response.status_code == 200
    assert "keep at least one enabled target" in response.content.decode()
    assert r.pool.targets.count() == 1


def test_it_refuses_a_forbidden_tenant_target_in_the_admin(staff):
    shop = tenant("shop")
    response = staff.post("/admin/proxy/pool/add/", pool_form(tenant=str(shop.pk), targets=[
        {"host": "169.254.169.254", "port": "80", "weight": "1", "state": "enabled"}]))
    assert response.status_code == 200
    assert "169.254.169.254 is a link-local address" in response.content.decode()
    assert not Pool.objects.exists()


def test_it_adds_a_tenant_with_delegations(staff):
    data = {"slug": "shop", "name": "Shop", "max_routes": "10", "max_pools": "10", "max_targets": "10",
            "max_certificates": "10", "allowed_networks": "[]", "change_note": ""}
    data.update(inline("delegations", [{"suffix": "Shop.Example.com."}]))
    data.update(inline("memberships", []))
    response = staff.post("/admin/tenancy/tenant/add/", data)
    assert response.status_code == 302, response.content
    assert list(Delegation.objects.values_list("suffix", flat=True)) == ["shop.example.com"]


def test_it_refuses_an_overlapping_delegation_in_the_admin(staff):
    tenant("shop", "shop.example.com")
    data = {"slug": "other", "name": "Other", "max_routes": "10", "max_pools": "10", "max_targets": "10",
            "max_certificates": "10", "allowed_networks": "[]", "change_note": ""}
    data.update(inline("delegations", [{"suffix": "a.shop.example.com"}]))
    data.update(inline("memberships", []))
    response = staff.post("/admin/tenancy/tenant/add/", data)
    assert response.status_code == 200
    assert "overlaps shop.example.com, delegated to tenant shop" in response.content.decode()
    assert not Tenant.objects.filter(slug="other").exists()


def test_it_uploads_a_certificate_and_never_shows_the_key(staff):
    pem, key = issue("a.localhost")
    response = staff.post("/admin/proxy/certificate/add/", {
        "name": "c", "tenant": "", "certificate_pem": pem, "private_key_pem": key, "change_note": ""})
    assert response.status_code == 302, response.content
    cert = Certificate.objects.get()
    assert cert.sans == ["a.localhost"] and cert.private_key_encrypted
    page = staff.get(f"/admin/proxy/certificate/{cert.pk}/change/").content.decode()
    assert "PRIVATE KEY" not in page and cert.private_key_encrypted not in page


def test_it_refuses_deleting_a_pool_in_use_from_the_admin(staff):
    r = route("api")
    response = staff.post(f"/admin/proxy/pool/{r.pool_id}/delete/", {"post": "yes"})
    assert Pool.objects.filter(pk=r.pool_id).exists()
    assert response.status_code in (200, 302)


def test_it_deletes_a_route_through_the_service(staff):
    r = route("api")
    response = staff.post(f"/admin/proxy/route/{r.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert ConfigVersion.objects.latest().snapshot["routes"] == []
    assert AuditEntry.objects.filter(object_type="route", action="delete").exists()


def test_it_shows_read_only_pages(staff):
    route("api")
    Node.register("n1")
    version = ConfigVersion.objects.latest()
    for url in ("/admin/publishing/configversion/", f"/admin/publishing/configversion/{version.pk}/change/",
                "/admin/publishing/node/", "/admin/audit/auditentry/", "/admin/alerts/alert/",
                "/admin/alerts/alertchannel/add/", "/admin/tenancy/tenant/add/", "/admin/proxy/pool/add/",
                "/admin/proxy/route/add/", "/admin/proxy/certificate/add/", "/admin/publishing/nodeevent/"):
        assert staff.get(url).status_code == 200, url
    node_page = staff.get(f"/admin/publishing/node/{Node.objects.get().pk}/change/").content.decode()
    assert "token_hash" not in node_page
    assert staff.get("/admin/publishing/configversion/add/").status_code == 403


def test_it_rolls_back_from_the_versions_list(staff):
    r = route("api")
    good = ConfigVersion.objects.latest()
    route("later")
    response = staff.post("/admin/publishing/configversion/", {
        "action": "rollback_to_selected", "_selected_action": [str(good.pk)]})
    assert response.status_code == 302
    assert ConfigVersion.objects.latest().rolled_back_from == good.number
    assert not Route.objects.get(name="later").enabled and r.pk
