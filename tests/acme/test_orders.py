"""Orders on the control plane, without a CA: what a route may ask, how orders follow
routes, one order per name at a time, failures (backoff, alert, challenges withdrawn),
challenges in the published snapshot, and what the API shows."""
import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from controlplane.acme import services, state
from controlplane.acme.client import Http01
from controlplane.acme.models import Challenge, NameClaim, Order
from controlplane.alerts.models import Alert
from controlplane.proxy import services as proxy_services
from controlplane.publishing import publisher
from dataplane import schema
from tests.controlplane.helpers import ACTOR, certificate, route, tenant

pytestmark = pytest.mark.django_db
KEY_AUTH_TAIL = ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


@pytest.fixture
def acme_on(settings):
    settings.SWITCHYARD_ACME_DIRECTORY = "https://ca.invalid/dir"
    settings.SWITCHYARD_ACME_RETRY_BASE_SECONDS = 60
    settings.SWITCHYARD_ALERT_DEBOUNCE_SECONDS = 300
    return settings


def test_acme_is_refused_when_the_installation_has_no_ca(settings):
    settings.SWITCHYARD_ACME_DIRECTORY = ""
    with pytest.raises(ValidationError) as raised:
        route("api", acme=True)
    assert "automatic certificates are off" in raised.value.message_dict["acme"][0]


def test_wildcard_hosts_need_dns01(acme_on):
    with pytest.raises(ValidationError) as raised:
        route("api", hosts=["*.apps.localhost"], acme=True)
    assert raised.value.message_dict["acme"] == [
        "*.apps.localhost: wildcards need DNS-01, which this installation does not offer (the operator has not "
        "set SWITCHYARD_ACME_DNS_SERVER and SWITCHYARD_ACME_DNS_ZONE)"]


def test_acme_and_an_uploaded_certificate_exclude_each_other(acme_on):
    cert = certificate(names=("api.localhost",))
    with pytest.raises(ValidationError) as raised:
        route("api", acme=True, certificate=cert)
    assert "cannot also name an uploaded one" in raised.value.message_dict["certificate"][0]


def test_a_tenant_cannot_order_outside_its_delegations(acme_on):
    shop = tenant("shop")
    with pytest.raises(ValidationError) as raised:
        route("api", owner=shop, hosts=["api.elsewhere.example.org"], acme=True)
    assert "outside tenant shop's delegations" in raised.value.message_dict["hosts"][0]
    assert not Order.objects.exists()


def test_orders_follow_the_route(acme_on):
    r = route("api", hosts=["b.localhost", "a.localhost"], acme=True)
    order = Order.objects.get(route=r)
    assert (order.state, order.names) == ("pending", ["a.localhost", "b.localhost"])
    order.state = Order.VALID
    order.save()
    proxy_services.update_route(ACTOR, r, priority=5)  # same names: the order stands
    assert Order.objects.get(route=r).state == "valid"
    proxy_services.update_route(ACTOR, r, hosts=["a.localhost", "c.localhost"])
    order = Order.objects.get(route=r)
    assert (order.state, order.names) == ("pending", ["a.localhost", "c.localhost"])
    proxy_services.update_route(ACTOR, r, acme=False)
    assert not Order.objects.filter(route=r).exists()


def test_one_order_per_name_at_a_time(acme_on):
    first = Order.objects.get(route=route("one", hosts=["shared.localhost"], acme=True))
    second = Order.objects.get(route=route("two", hosts=["shared.localhost"], path="/two", acme=True))
    now = timezone.now()
    assert services.claim(first.pk, now) is not None
    assert services.claim(second.pk, now) is None       # the name is held
    assert services.claim(first.pk, now) is None        # and the order itself is in progress
    services.release(first)
    assert services.claim(second.pk, now) is not None
    assert list(NameClaim.objects.values_list("name", "order")) == [("shared.localhost", second.pk)]


def test_a_dead_worker_s_claim_expires(acme_on):
    first = Order.objects.get(route=route("one", hosts=["shared.localhost"], acme=True))
    second = Order.objects.get(route=route("two", hosts=["shared.localhost"], path="/two", acme=True))
    then = timezone.now()
    assert services.claim(first.pk, then) is not None
    assert services.claim(second.pk, then + state.STALE_ATTEMPT + dt.timedelta(seconds=1)) is not None


def test_challenges_are_published_and_pass_the_node_s_own_parse(acme_on):
    r = route("api", hosts=["api.localhost"], acme=True)
    order = Order.objects.get(route=r)
    challenge = Http01("api.localhost", "tok_EN-1", "tok_EN-1" + KEY_AUTH_TAIL, None)
    version = services.publish_challenges(order, [challenge])
    snapshot = publisher.current_version().snapshot
    assert publisher.current_version().number == version
    assert snapshot["acme_challenges"] == {"http01": [{"token": "tok_EN-1",
                                                      "key_authorization": "tok_EN-1" + KEY_AUTH_TAIL}]}
    parsed = schema.parse_snapshot(snapshot)
    assert [c.token for c in parsed.acme_challenges.http01] == ["tok_EN-1"]


def test_failures_back_off_alert_once_and_withdraw_the_challenges(acme_on):
    r = route("api", hosts=["api.localhost"], acme=True)
    order = Order.objects.get(route=r)
    services.publish_challenges(order, [Http01("api.localhost", "tok1", "tok1" + KEY_AUTH_TAIL, None)])
    now = timezone.now()
    services.record_failure(order, "urn:ietf:params:acme:error:connection: refused", now)
    order.refresh_from_db()
    assert (order.state, order.failures, order.next_retry) == ("failed", 1, now + dt.timedelta(seconds=60))
    assert "connection: refused" in order.error
    assert not Challenge.objects.exists()
    assert "acme_challenges" not in publisher.current_version().snapshot
    services.record_failure(order, "refused again", now)
    order.refresh_from_db()
    assert (order.failures, order.next_retry) == (2, now + dt.timedelta(seconds=120))
    alerts = list(Alert.objects.filter(kind="acme_failed"))
    assert len(alerts) == 1  # debounced per route
    assert "api.localhost (route api)" in alerts[0].subject
    assert "Next attempt:" in alerts[0].body
    assert services.due_orders(now) == []
    assert services.due_orders(now + dt.timedelta(seconds=120)) == [order.pk]


@pytest.fixture
def staff_api(db):
    from django.contrib.auth import get_user_model

    from tests.api.conftest import client_for
    return client_for(get_user_model().objects.create_user("operator", is_staff=True))


def test_api_shows_the_order_as_it_stands(acme_on, staff_api):
    pool_id = staff_api.post("/api/v1/pools/", {"name": "p", "targets": [{"host": "127.0.0.1", "port": 80}]},
                             format="json").json()["id"]
    refused = staff_api.post("/api/v1/routes/", {"name": "w", "hosts": ["*.w.localhost"], "pool": pool_id,
                                                 "acme": True}, format="json")
    assert refused.status_code == 400
    assert refused.json()["acme"] == ["*.w.localhost: wildcards need DNS-01, which this installation does not "
                                      "offer (the operator has not set SWITCHYARD_ACME_DNS_SERVER and "
                                      "SWITCHYARD_ACME_DNS_ZONE)"]
    created = staff_api.post("/api/v1/routes/", {"name": "a", "hosts": ["a.localhost"], "pool": pool_id,
                                                 "acme": True}, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["acme_status"]["state"] == "pending"
    assert body["acme_status"]["certificate"] is None
    order = Order.objects.get(route_id=body["id"])
    services.record_failure(order, "the CA said no", timezone.now())
    shown = staff_api.get(f"/api/v1/routes/{body['id']}/").json()["acme_status"]
    assert shown["state"] == "failed" and shown["error"] == "the CA said no" and shown["next_retry"]
    plain = staff_api.post("/api/v1/routes/", {"name": "b", "hosts": ["b.localhost"], "pool": pool_id},
                           format="json").json()
    assert plain["acme_status"] is None


def test_the_scan_is_scheduled_in_beat(db):
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(name="acme-scan")
    assert task.task == "controlplane.acme.tasks.scan" and task.enabled
    assert task.crontab.minute == "*/10"
