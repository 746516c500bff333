"""What one tenant could see of another (change notes, platform alert
deliveries, a deleted tenant's config under a reused slug) and unsafe targets
(the control plane and the proxy's own listeners, CR/LF in a test request's host)."""
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from controlplane.alerts.models import AlertChannel, Delivery
from controlplane.alerts.services import save_channel
from controlplane.audit.models import AuditEntry
from controlplane.proxy import services
from controlplane.publishing import publisher
from controlplane.publishing.models import ConfigVersion, Node
from controlplane.tenancy.models import Membership
from tests.controlplane.helpers import ACTOR, PUBLIC_IP

from .conftest import client_for

pytestmark = pytest.mark.django_db
BASE = "/api/v1"


def dashboard(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_a_tenant_never_sees_another_tenants_change_note_or_author(world, as_role):
    beta_editor = client_for(world["b"].users["editor"])
    r = beta_editor.patch(f"{BASE}/routes/{world['b'].route.pk}/", {"path": "/v2"}, format="json",
                          HTTP_X_CHANGE_NOTE="beta: moving to the secret v2 backend")
    assert r.status_code == 200
    beta_version = publisher.current_version().number
    # alpha's owner then changes something that publishes no version
    r = as_role("owner").post(f"{BASE}/api-tokens/", {"name": "ci", "tenant": "alpha"}, format="json")
    assert r.status_code == 201
    entry = AuditEntry.objects.filter(tenant=world["a"].tenant, object_type="apitoken").latest("id")
    assert entry.config_version is None
    audit = as_role("viewer").get(f"{BASE}/audit/?limit=200").json()["results"]
    assert beta_version not in {e["config_version"] for e in audit}
    page = dashboard(world["a"].users["viewer"]).get(reverse("dashboard:changes"))
    assert page.status_code == 200
    page = page.content.decode()
    assert "secret v2 backend" not in page and "beta-editor" not in page
    detail = dashboard(world["a"].users["viewer"]).get(reverse("dashboard:change", args=[beta_version]))
    assert detail.status_code == 404


def test_a_tenant_sees_only_deliveries_to_its_own_channels(world, as_role):
    platform = save_channel(ACTOR, AlertChannel(name="noc-hook", kind="webhook",
                                                url=f"https://{PUBLIC_IP}/noc"), secret="x")
    alert = world["a"].alert
    Delivery.objects.create(alert=alert, channel=platform, status=Delivery.FAILED,
                            error="POST https://noc.platform.internal/hook: connection refused")
    body = as_role("viewer").get(f"{BASE}/alerts/{alert.pk}/").json()
    assert [d["channel_name"] for d in body["deliveries"]] == ["alpha-hook"]
    listed = as_role("viewer").get(f"{BASE}/alerts/").json()["results"]
    assert "noc.platform.internal" not in str(listed)
    page = dashboard(world["a"].users["viewer"]).get(reverse("dashboard:alerts"))
    assert page.status_code == 200 and b"alpha-hook" in page.content
    page = page.content.decode()
    assert "noc.platform.internal" not in page and "noc-hook" not in page
    staff = client_for(world["staff"]).get(f"{BASE}/alerts/{alert.pk}/").json()
    assert {d["channel_name"] for d in staff["deliveries"]} == {"alpha-hook", "noc-hook"}


def gamma(name: str, route_name: str):
    tenant = services.create_tenant(ACTOR, slug="gamma", name=name)
    services.create_delegation(ACTOR, tenant, "gamma.example.com")
    pool = services.create_pool(ACTOR, tenant=tenant, name=f"{route_name}-pool",
                                targets=[{"host": PUBLIC_IP, "port": 8080}])
    route = services.create_route(ACTOR, tenant=tenant, name=route_name, hosts=["app.gamma.example.com"],
                                  pool=pool)
    return tenant, pool, route


def test_a_new_tenant_with_a_deleted_tenants_slug_sees_nothing_of_it(world):
    old, pool, route = gamma("Old Gamma", "old-gamma-payroll")
    first = publisher.current_version().number
    services.delete_route(ACTOR, route)
    services.delete_pool(ACTOR, pool)
    services.delete_tenant(ACTOR, old)
    new, _, _ = gamma("New Gamma", "new-gamma-web")
    user = get_user_model().objects.create_user("new-gamma-viewer")
    Membership.objects.create(user=user, tenant=new, role="viewer")
    current = publisher.current_version().number
    diff = dashboard(user).get(reverse("dashboard:change_diff") + f"?a={first}&b={current}").content.decode()
    assert "new-gamma-web" in diff and "old-gamma-payroll" not in diff
    diff = dashboard(user).get(reverse("dashboard:change_diff") + f"?a=1&b={first}").content.decode()
    assert "old-gamma-payroll" not in diff


@pytest.mark.parametrize("port", [8000, 9901, 8080])
def test_tenant_targets_may_not_be_the_control_plane_or_proxy_listeners(world, port):
    tenant = world["a"].tenant
    services.update_tenant(ACTOR, tenant, allowed_networks=["127.0.0.0/8"])
    api = client_for(world["a"].users["editor"])
    count = ConfigVersion.objects.count()
    r = api.post(f"{BASE}/pools/", {"tenant": "alpha", "name": "sneaky",
                                    "targets": [{"host": "127.0.0.1", "port": port}]}, format="json")
    assert r.status_code == 400
    assert "control plane or a proxy listener" in str(r.json()["targets"])
    assert ConfigVersion.objects.count() == count
    ok = api.post(f"{BASE}/pools/", {"tenant": "alpha", "name": "internal",
                                     "targets": [{"host": "127.0.0.1", "port": 8001}]}, format="json")
    assert ok.status_code == 201, ok.json()


def test_a_test_request_host_with_crlf_is_a_field_named_400(world, as_role):
    a = world["a"]
    route = services.create_route(ACTOR, tenant=a.tenant, name="alpha-wild", hosts=["*.alpha.example.com"],
                          pool=a.pool, certificate=a.certificate, path="/wild")
    Node.objects.filter(pk=world["node"].pk).update(connected=True)
    r = as_role("editor").post(f"/api/v1/diagnostics/routes/{route.pk}/test-request/",
                               {"host": "x\r\nX-Injected: 1.alpha.example.com"}, format="json")
    assert r.status_code == 400
    assert "invalid host name" in r.json()["host"][0]
    r = as_role("editor").post(f"/api/v1/diagnostics/routes/{route.pk}/test-request/",
                               {"host": "*.alpha.example.com"}, format="json")
    assert r.status_code == 400 and "wildcard" in r.json()["host"][0]
