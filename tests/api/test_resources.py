"""CRUD of every resource as platform staff, through the services."""
import pytest

from controlplane.alerts.models import AlertChannel
from controlplane.audit.models import AuditEntry
from controlplane.proxy.models import Certificate, Pool, Route, Target
from controlplane.publishing.models import Node
from controlplane.tenancy.models import ApiToken, Delegation, Membership, Tenant, hash_token
from tests.controlplane.helpers import PUBLIC_IP, issue

pytestmark = pytest.mark.django_db

BASE = "/api/v1"


def test_it_creates_reads_updates_and_deletes_tenants(staff_api):
    r = staff_api.post(f"{BASE}/tenants/", {"slug": "gamma", "name": "Gamma",
                                             "quotas": {"routes": 5, "pools": 2, "targets": 9, "certificates": 1},
                                             "allowed_networks": ["10.20.0.0/16"]}, format="json")
    assert r.status_code == 201, r.json()
    assert r.json()["quotas"] == {"routes": 5, "pools": 2, "targets": 9, "certificates": 1}
    assert Tenant.objects.get(slug="gamma").max_routes == 5
    assert staff_api.get(f"{BASE}/tenants/gamma/").json()["allowed_networks"] == ["10.20.0.0/16"]
    r = staff_api.patch(f"{BASE}/tenants/gamma/", {"name": "G", "quotas": {"routes": 7}}, format="json")
    assert r.status_code == 200 and r.json()["name"] == "G" and r.json()["quotas"]["routes"] == 7
    assert [t["slug"] for t in staff_api.get(f"{BASE}/tenants/").json()["results"]] == ["alpha", "beta", "gamma"]
    assert staff_api.delete(f"{BASE}/tenants/gamma/").status_code == 204
    assert not Tenant.objects.filter(slug="gamma").exists()


def test_it_creates_updates_and_deletes_delegations(staff_api, world):
    r = staff_api.post(f"{BASE}/delegations/", {"tenant": "alpha", "suffix": "Alpha.Example.NET"}, format="json")
    assert r.status_code == 201, r.json()
    assert r.json()["tenant"] == "alpha" and r.json()["suffix"] == "alpha.example.net"
    pk = r.json()["id"]
    r = staff_api.patch(f"{BASE}/delegations/{pk}/", {"suffix": "alpha.example.org"}, format="json")
    assert r.status_code == 200 and Delegation.objects.get(pk=pk).suffix == "alpha.example.org"
    assert staff_api.get(f"{BASE}/delegations/?tenant=beta").json()["count"] == 1
    assert staff_api.delete(f"{BASE}/delegations/{pk}/").status_code == 204
    assert not Delegation.objects.filter(pk=pk).exists()


def test_it_creates_pools_with_nested_targets_and_health_check(staff_api, world):
    body = {"tenant": "alpha", "name": "api-pool", "algorithm": "least_conn",
            "health_check": {"enabled": True, "type": "http", "path": "/healthz", "expected_statuses": "200-299",
                             "interval": 3, "healthy_threshold": 1},
            "targets": [{"host": PUBLIC_IP, "port": 80, "weight": 3},
                        {"host": "93.184.216.35", "port": 80, "enabled": False},
                        {"host": "93.184.216.36", "port": 80, "state": "draining"}]}
    r = staff_api.post(f"{BASE}/pools/", body, format="json")
    assert r.status_code == 201, r.json()
    data = r.json()
    assert data["health_check"]["path"] == "/healthz" and data["health_check"]["healthy_threshold"] == 1
    assert [(t["host"], t["weight"], t["enabled"], t["state"]) for t in data["targets"]] == [
        (PUBLIC_IP, 3, True, "enabled"), ("93.184.216.35", 1, False, "disabled"),
        ("93.184.216.36", 1, False, "draining")]
    pool = Pool.objects.get(pk=data["id"])
    assert pool.health_check_enabled and pool.health_check_interval == 3 and pool.tenant.slug == "alpha"


def test_it_updates_pool_targets_and_keeps_them_when_absent(staff_api, world):
    pool = world["a"].pool
    r = staff_api.patch(f"{BASE}/pools/{pool.pk}/", {"read_timeout": 12.5}, format="json")
    assert r.status_code == 200, r.json()
    assert [t["host"] for t in r.json()["targets"]] == [PUBLIC_IP]
    r = staff_api.patch(f"{BASE}/pools/{pool.pk}/", {"targets": [
        {"host": PUBLIC_IP, "port": 8080, "weight": 5}, {"host": "93.184.216.40", "port": 81}]}, format="json")
    assert r.status_code == 200, r.json()
    assert sorted((t.host, t.port, t.weight) for t in Target.objects.filter(pool=pool)) == [
        ("93.184.216.34", 8080, 5), ("93.184.216.40", 81, 1)]


def test_it_shows_passive_ejections_beside_the_active_health_of_pool_targets(staff_api, world, as_role):
    import datetime as dt
    from django.utils import timezone
    from controlplane.telemetry.models import TargetEjection
    pool = world["a"].pool
    target = pool.targets.get()
    other, _ = Node.register("edge-2")
    until = (timezone.now() + dt.timedelta(seconds=30)).replace(microsecond=0)
    TargetEjection.objects.create(node=world["node"], target=target, until=until - dt.timedelta(seconds=10),
                                  reported=timezone.now())
    TargetEjection.objects.create(node=other, target=target, until=until, reported=timezone.now())
    gone = world["b"].pool.targets.get()  # an ejection that has ended is not shown
    TargetEjection.objects.create(node=world["node"], target=gone, until=timezone.now() - dt.timedelta(seconds=1),
                                  reported=timezone.now())
    for client in (staff_api, as_role("viewer")):
        r = client.get(f"{BASE}/pools/{pool.pk}/")
        assert r.status_code == 200, r.json()
        (t,) = r.json()["targets"]
        assert t["healthy"] is True  # the active state is still there, beside it
        assert sorted(t["ejected_by"]) == ["edge-1", "edge-2"]
        assert dt.datetime.fromisoformat(t["ejected_until"].replace("Z", "+00:00")) == until
    listed = {p["name"]: p for p in staff_api.get(f"{BASE}/pools/").json()["results"]}
    assert listed["beta-web"]["targets"][0]["ejected_until"] is None
    assert listed["beta-web"]["targets"][0]["ejected_by"] == []
    assert listed["alpha-web"]["targets"][0]["ejected_by"] != []


def test_it_validates_the_passive_health_settings_of_a_pool(staff_api, world):
    pool = world["a"].pool
    r = staff_api.patch(f"{BASE}/pools/{pool.pk}/", {"passive_failures": 2, "passive_ejection_seconds": 7.5},
                        format="json")
    assert r.status_code == 200, r.json()
    assert (r.json()["passive_failures"], r.json()["passive_ejection_seconds"]) == (2, 7.5)
    r = staff_api.patch(f"{BASE}/pools/{pool.pk}/", {"passive_ejection_seconds": 99999}, format="json")
    assert r.status_code == 400 and "passive_ejection_seconds" in str(r.json())


def test_it_deletes_an_unused_pool(staff_api, world):
    r = staff_api.post(f"{BASE}/pools/", {"tenant": "alpha", "name": "spare", "targets": []}, format="json")
    assert r.status_code == 201, r.json()
    assert staff_api.delete(f"{BASE}/pools/{r.json()['id']}/").status_code == 204
    assert not Pool.objects.filter(name="spare").exists()


def test_it_creates_updates_and_deletes_routes(staff_api, world):
    a = world["a"]
    body = {"tenant": "alpha", "name": "shop", "hosts": ["Shop.Alpha.Example.com"], "path": "/v1",
            "pool": a.pool.pk, "methods": ["get", "POST"], "headers": [{"name": "X-Env", "value": "prod"}],
            "request_headers": {"set": [{"name": "X-Team", "value": "shop"}], "remove": ["X-Debug"]},
            "response_headers": {"add": [{"name": "X-Served-By", "value": "switchyard"}]}}
    r = staff_api.post(f"{BASE}/routes/", body, format="json")
    assert r.status_code == 201, r.json()
    data = r.json()
    assert data["hosts"] == ["shop.alpha.example.com"] and data["methods"] == ["GET", "POST"]
    assert data["pool"] == a.pool.pk and data["tenant"] == "alpha" and data["certificate"] is None
    assert data["request_headers"] == {"set": [{"name": "X-Team", "value": "shop"}], "remove": ["X-Debug"]}
    r = staff_api.patch(f"{BASE}/routes/{data['id']}/", {"priority": 10, "enabled": False}, format="json")
    assert r.status_code == 200 and r.json()["priority"] == 10 and not Route.objects.get(pk=data["id"]).enabled
    r = staff_api.put(f"{BASE}/routes/{data['id']}/", {**body, "path": "/v2"}, format="json")
    assert r.status_code == 200 and r.json()["path"] == "/v2", r.json()
    assert staff_api.delete(f"{BASE}/routes/{data['id']}/").status_code == 204
    assert not Route.objects.filter(pk=data["id"]).exists()


def test_it_filters_routes_by_tenant_host_and_pool(staff_api, world):
    a, b = world["a"], world["b"]
    names = lambda q: [r["name"] for r in staff_api.get(f"{BASE}/routes/?{q}").json()["results"]]  # noqa: E731
    assert names("tenant=alpha") == ["alpha-api"]
    assert names("host=API.beta.example.com") == ["beta-api"]
    assert names("host=nothing.example.com") == []
    assert names(f"pool={b.pool.pk}") == ["beta-api"]
    assert names(f"pool={a.pool.pk}&tenant=beta") == []
    assert staff_api.get(f"{BASE}/routes/?pool=abc").status_code == 400


def test_it_uploads_renames_replaces_and_deletes_certificates(staff_api, world):
    pem, key = issue("www.alpha.example.com")
    r = staff_api.post(f"{BASE}/certificates/", {"tenant": "alpha", "name": "www", "certificate_pem": pem,
                                                  "private_key_pem": key}, format="json")
    assert r.status_code == 201, r.json()
    data = r.json()
    assert "private_key_pem" not in data and "private_key_encrypted" not in data
    assert data["sans"] == ["www.alpha.example.com"] and data["source"] == "uploaded"
    assert data["fingerprint"] and data["not_after"] and data["subject"] is not None and "warnings" in data
    r = staff_api.patch(f"{BASE}/certificates/{data['id']}/", {"name": "www2"}, format="json")
    assert r.status_code == 200 and r.json()["name"] == "www2"
    pem2, key2 = issue("www.alpha.example.com", "alpha.example.com")
    r = staff_api.patch(f"{BASE}/certificates/{data['id']}/", {"certificate_pem": pem2, "private_key_pem": key2},
                        format="json")
    assert r.status_code == 200 and r.json()["sans"] == ["www.alpha.example.com", "alpha.example.com"]
    listed = staff_api.get(f"{BASE}/certificates/").json()["results"]
    assert all("private_key_pem" not in c for c in listed)
    assert staff_api.delete(f"{BASE}/certificates/{data['id']}/").status_code == 204
    assert not Certificate.objects.filter(pk=data["id"]).exists()


def test_it_registers_lists_and_revokes_nodes(staff_api, world):
    r = staff_api.post(f"{BASE}/nodes/", {"name": "edge-2"}, format="json")
    assert r.status_code == 201, r.json()
    token = r.json()["token"]
    node = Node.objects.get(name="edge-2")
    assert node.token_hash == hash_token(token)
    shown = staff_api.get(f"{BASE}/nodes/{node.pk}/").json()
    assert "token" not in shown and "token_hash" not in shown and shown["name"] == "edge-2"
    assert [n["name"] for n in staff_api.get(f"{BASE}/nodes/").json()["results"]] == ["edge-1", "edge-2"]
    r = staff_api.post(f"{BASE}/nodes/{node.pk}/revoke/")
    assert r.status_code == 200 and r.json()["revoked"] is True
    assert Node.objects.get(pk=node.pk).revoked
    assert staff_api.post(f"{BASE}/nodes/", {"name": "edge-2"}, format="json").json() == {
        "name": ["a node named edge-2 already exists"]}


def test_it_lists_audit_entries_and_alerts_with_deliveries(staff_api, world):
    audit = staff_api.get(f"{BASE}/audit/?tenant=alpha&object_type=route").json()
    assert audit["count"] >= 1 and {e["tenant"] for e in audit["results"]} == {"alpha"}
    entry = staff_api.get(f"{BASE}/audit/{audit['results'][0]['id']}/").json()
    assert entry["object_type"] == "route" and entry["action"] == "create"
    alerts = staff_api.get(f"{BASE}/alerts/?kind=target_down").json()
    assert alerts["count"] == 2
    alert = staff_api.get(f"{BASE}/alerts/{world['a'].alert.pk}/").json()
    assert alert["deliveries"][0]["status"] == "failed" and alert["deliveries"][0]["channel_name"] == "alpha-hook"


def test_it_manages_alert_channels_with_a_write_only_secret(staff_api, world):
    r = staff_api.post(f"{BASE}/alert-channels/", {"tenant": "alpha", "name": "pager", "kind": "webhook",
                                                    "url": f"https://{PUBLIC_IP}/p", "secret": "abc"}, format="json")
    assert r.status_code == 201, r.json()
    data = r.json()
    assert "secret" not in data and data["has_secret"] is True
    channel = AlertChannel.objects.get(pk=data["id"])
    assert channel.secret == "abc" and "abc" not in channel.secret_encrypted
    r = staff_api.patch(f"{BASE}/alert-channels/{channel.pk}/", {"name": "pager2"}, format="json")
    assert r.status_code == 200 and AlertChannel.objects.get(pk=channel.pk).secret == "abc"
    r = staff_api.post(f"{BASE}/alert-channels/", {"name": "mail", "kind": "email", "emails": ["ops@example.com"]},
                       format="json")
    assert r.status_code == 201 and r.json()["tenant"] is None
    assert staff_api.delete(f"{BASE}/alert-channels/{channel.pk}/").status_code == 204
    assert not AlertChannel.objects.filter(pk=channel.pk).exists()
    assert not any("abc" in str(e.after) + str(e.before) for e in AuditEntry.objects.all())


def test_it_manages_members(staff_api, world):
    r = staff_api.post(f"{BASE}/members/", {"tenant": "alpha", "user": "beta-viewer", "role": "editor"},
                       format="json")
    assert r.status_code == 201, r.json()
    pk = r.json()["id"]
    r = staff_api.patch(f"{BASE}/members/{pk}/", {"role": "owner"}, format="json")
    assert r.status_code == 200 and Membership.objects.get(pk=pk).role == "owner"
    assert staff_api.delete(f"{BASE}/members/{pk}/").status_code == 204
    assert not Membership.objects.filter(pk=pk).exists()
    r = staff_api.post(f"{BASE}/members/", {"tenant": "alpha", "user": "nobody", "role": "editor"}, format="json")
    assert r.status_code == 400 and "user" in r.json()


def test_it_issues_lists_and_revokes_api_tokens(staff_api, world):
    r = staff_api.post(f"{BASE}/api-tokens/", {"tenant": "alpha", "role": "viewer", "name": "ro"}, format="json")
    assert r.status_code == 201, r.json()
    token = r.json()["token"]
    row = ApiToken.objects.get(pk=r.json()["id"])
    assert row.token_hash == hash_token(token) and row.role == "viewer" and row.tenant.slug == "alpha"
    listed = staff_api.get(f"{BASE}/api-tokens/?tenant=alpha").json()["results"]
    assert row.pk in [t["id"] for t in listed] and all("token" not in t and "token_hash" not in t for t in listed)
    r = staff_api.post(f"{BASE}/api-tokens/{row.pk}/revoke/")
    assert r.status_code == 200 and r.json()["revoked"]
    other = world["a"].token
    assert staff_api.delete(f"{BASE}/api-tokens/{other.pk}/").status_code == 204
    assert ApiToken.objects.get(pk=other.pk).revoked is not None
