"""Quarantine: a NACK costs only the owner of the object it names.

A NACK is handled by ``consumers.record_nack``, the function the sync consumer runs
for every NACK (the real-process flow is in ``tests/e2e/test_quarantine.py``). The
versions are made through the service layer, as every change is.
"""
import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from controlplane.alerts.models import Alert, AlertChannel
from controlplane.audit.models import AuditEntry
from controlplane.proxy import services
from controlplane.publishing import publisher, quarantine
from controlplane.publishing.consumers import record_nack
from controlplane.publishing.models import ConfigVersion, Node, Quarantine
from controlplane.tenancy.models import ApiToken, Membership
from dataplane import schema
from tests.alerts.servers import eager_celery, smtp_server  # noqa: F401 - fixtures

from .helpers import ACTOR, certificate, route, tenant

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def encryption_key(settings):
    settings.SWITCHYARD_ENCRYPTION_KEY = "test-encryption-key"


@pytest.fixture
def world(db):
    shop, acme = tenant("shop"), tenant("acme")
    return {"shop": shop, "acme": acme, "shop_route": route("api", shop), "acme_route": route("web", acme),
            "node": Node.register("edge-1")[0]}


def index_of(version: ConfigVersion, key: str, object_id: int) -> int:
    return next(i for i, item in enumerate(version.snapshot[key]) if item["id"] == object_id)


def ids(version: ConfigVersion, key: str) -> list[int]:
    return [item["id"] for item in version.snapshot[key]]


def nack(node: Node, version: ConfigVersion, *errors: tuple[str, str]) -> None:
    record_nack(node.pk, "nonce", version.number, version.sha256,
                [{"path": path, "message": message} for path, message in errors])


def test_it_quarantines_the_route_a_nack_names_and_publishes_the_rest(world, smtp_server, eager_celery,
                                                                     django_capture_on_commit_callbacks):
    shop_route, acme_route = world["shop_route"], world["acme_route"]
    for name, owner, address in (("ops", None, "ops@platform.test"), ("shop-dev", world["shop"], "dev@shop.test"),
                                 ("acme-dev", world["acme"], "dev@acme.test")):
        AlertChannel.objects.create(name=name, tenant=owner, kind="email", emails=[address])
    rejected = publisher.current_version()
    path = f"routes[{index_of(rejected, 'routes', shop_route.pk)}].response_headers.set[0].value"

    with django_capture_on_commit_callbacks(execute=True):
        nack(world["node"], rejected, (path, "this node allows no such value"))

    latest = publisher.current_version()
    assert latest.number == rejected.number + 1
    assert ids(latest, "routes") == [acme_route.pk]
    assert ids(latest, "pools") == [acme_route.pool_id]
    schema.parse_snapshot(latest.snapshot)
    entry = AuditEntry.objects.get(action="quarantine")
    assert (entry.actor, entry.tenant, entry.object_type, entry.object_id) == ("system", world["shop"], "route",
                                                                               str(shop_route.pk))
    assert entry.config_version == latest.number
    assert entry.after["errors"] == [{"path": path, "message": "this node allows no such value"}]
    assert entry.after["node"] == "edge-1" and entry.after["rejected_version"] == rejected.number
    alert = Alert.objects.get()  # the owner's, delivered to the platform too: no second alert of the NACK
    assert (alert.kind, alert.tenant) == ("node_rejected_config", world["shop"])
    assert alert.subject == f"Route api quarantined: node edge-1 rejected it: {path}: this node allows no such value"
    assert sorted(m["to"][0] for m in smtp_server.messages) == ["dev@shop.test", "ops@platform.test"]
    assert f"left out of version {latest.number}" in smtp_server.messages[0]["body"]


def test_a_quarantined_pool_takes_the_routes_that_use_it_along(world):
    shop_pool = world["shop_route"].pool
    second = route("admin", world["shop"], pool_obj=shop_pool)
    rejected = publisher.current_version()
    nack(world["node"], rejected, (f"pools[{index_of(rejected, 'pools', shop_pool.pk)}].tls.ca_pem", "bad CA"))

    latest = publisher.current_version()
    assert ids(latest, "routes") == [world["acme_route"].pk]
    assert shop_pool.pk not in ids(latest, "pools")
    schema.parse_snapshot(latest.snapshot)
    q = Quarantine.objects.get()
    assert (q.kind, q.object_id, q.tenant, q.version, q.node_name) == ("pool", shop_pool.pk, world["shop"],
                                                                      rejected.number, "edge-1")
    assert second.pk not in ids(latest, "routes")


def test_a_quarantined_certificate_takes_only_the_routes_that_name_it_along(world):
    cert = certificate("shop-cert", world["shop"])
    naming = route("secure", world["shop"], certificate=cert)
    rejected = publisher.current_version()
    index = index_of(rejected, "certificates", cert.pk)
    nack(world["node"], rejected, (f"certificates[{index}].certificate_pem", "unsupported key type"))

    latest = publisher.current_version()
    assert ids(latest, "certificates") == []
    assert sorted(ids(latest, "routes")) == sorted([world["shop_route"].pk, world["acme_route"].pk])
    assert naming.pk in ids(rejected, "routes")
    schema.parse_snapshot(latest.snapshot)


def test_several_nodes_rejecting_one_version_quarantine_once(world):
    second_node = Node.register("edge-2")[0]
    rejected = publisher.current_version()
    error = (f"routes[{index_of(rejected, 'routes', world['shop_route'].pk)}].hosts", "overlaps")
    nack(world["node"], rejected, error)
    nack(second_node, rejected, error)

    assert Quarantine.objects.count() == 1
    assert publisher.current_version().number == rejected.number + 1
    assert AuditEntry.objects.filter(action="quarantine").count() == 1
    assert Alert.objects.count() == 1


def test_an_error_naming_no_object_quarantines_nothing_and_alerts_the_platform(world):
    rejected = publisher.current_version()
    nack(world["node"], rejected, ("schema", "unsupported schema version 1 (this node speaks 2)"))

    assert not Quarantine.objects.exists()
    assert publisher.current_version() == rejected
    alert = Alert.objects.get()
    assert (alert.kind, alert.tenant) == ("node_rejected_config", None)
    assert alert.subject.startswith(f"Node edge-1 rejected config v{rejected.number}: schema: unsupported")


def test_an_object_changed_since_the_rejected_version_is_not_quarantined(world):
    rejected = publisher.current_version()
    path = f"routes[{index_of(rejected, 'routes', world['shop_route'].pk)}].path"
    services.update_route(ACTOR, world["shop_route"], path="/v2")
    nack(world["node"], rejected, (path, "bad path"))

    assert not Quarantine.objects.exists()
    assert world["shop_route"].pk in ids(publisher.current_version(), "routes")
    assert Alert.objects.get().tenant is None  # the platform hears of the NACK as before


def test_saving_the_object_again_lifts_the_quarantine(world):
    shop_route = world["shop_route"]
    rejected = publisher.current_version()
    nack(world["node"], rejected, (f"routes[{index_of(rejected, 'routes', shop_route.pk)}].path", "bad path"))
    assert shop_route.pk not in ids(publisher.current_version(), "routes")

    shop_route.refresh_from_db()
    services.update_route(ACTOR, shop_route, path="/fixed")
    assert shop_route.pk in ids(publisher.current_version(), "routes")


def test_deleting_the_object_lifts_the_quarantine(world):
    shop_route = world["shop_route"]
    rejected = publisher.current_version()
    nack(world["node"], rejected, (f"routes[{index_of(rejected, 'routes', shop_route.pk)}].path", "bad path"))
    assert quarantine.in_force()
    services.delete_route(ACTOR, shop_route)
    assert quarantine.in_force() == {}
    again = services.create_route(ACTOR, tenant=world["shop"], name="api", hosts=["api.shop.example.com"],
                                  pool=shop_route.pool)
    assert again.pk in ids(publisher.current_version(), "routes")


def owner_api(tenant_) -> APIClient:
    user = get_user_model().objects.create_user(f"{tenant_.slug}-owner")
    Membership.objects.create(user=user, tenant=tenant_, role="owner")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user)[1]}")
    return client


def test_the_owner_sees_the_quarantine_in_the_api_and_on_the_dashboard(world, client):
    shop_route = world["shop_route"]
    second = route("admin", world["shop"], pool_obj=shop_route.pool)
    rejected = publisher.current_version()
    path = f"pools[{index_of(rejected, 'pools', shop_route.pool_id)}].tls.ca_pem"
    nack(world["node"], rejected, (path, "bad CA"))
    api = owner_api(world["shop"])

    pool_json = api.get(f"/api/v1/pools/{shop_route.pool_id}/").json()
    assert pool_json["quarantine"]["error"] == f"{path}: bad CA"
    assert {k: pool_json["quarantine"][k] for k in ("kind", "id", "version", "node")} == {
        "kind": "pool", "id": shop_route.pool_id, "version": rejected.number, "node": "edge-1"}
    routes = {r["id"]: r["quarantine"] for r in api.get("/api/v1/routes/").json()["results"]}
    assert routes[second.pk]["kind"] == "pool" and routes[shop_route.pk]["id"] == shop_route.pool_id
    assert owner_api(world["acme"]).get(f"/api/v1/routes/{world['acme_route'].pk}/").json()["quarantine"] is None

    client.force_login(get_user_model().objects.get(username="shop-owner"))
    page = client.get(f"/routes/{second.pk}/").content.decode()
    assert "Quarantined:" in page and "its pool api-pool" in page and f"{path}: bad CA" in page
    assert "Quarantined:" in client.get(f"/pools/{shop_route.pool_id}/").content.decode()

    shop_pool = shop_route.pool
    shop_pool.refresh_from_db()
    services.update_pool(ACTOR, shop_pool, tls_sni="")
    assert api.get(f"/api/v1/routes/{second.pk}/").json()["quarantine"] is None
    assert "Quarantined:" not in client.get(f"/routes/{second.pk}/").content.decode()
