"""Per-route method and profile, External Account Binding and ARI ``replaces``: what a
route may ask (API, with clear errors), what the orders send, and an account registered
with EAB at a Pebble that requires it."""
import json

import pytest
from django.utils import timezone

from controlplane.acme import ari, client, issuance, services
from controlplane.acme.models import Account, Order
from controlplane.proxy import services as proxy_services
from controlplane.publishing import publisher
from dataplane import schema
from tests.acme.pebble import Pebble, require
from tests.controlplane.helpers import ACTOR, certificate, issue, route

pytestmark = pytest.mark.django_db
EAB_KID = "kid-switchyard"
EAB_HMAC = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"


@pytest.fixture
def acme_on(settings):
    settings.SWITCHYARD_ACME_DIRECTORY = "https://ca.invalid/dir"
    settings.SWITCHYARD_ACME_DNS_SERVER = ""
    return settings


@pytest.fixture
def staff_api(db):
    from django.contrib.auth import get_user_model

    from tests.api.conftest import client_for
    return client_for(get_user_model().objects.create_user("operator", is_staff=True))


def test_api_takes_the_challenge_and_profile_per_route_with_clear_errors(acme_on, staff_api):
    pool_id = staff_api.post("/api/v1/pools/", {"name": "p", "targets": [{"host": "127.0.0.1", "port": 80}]},
                             format="json").json()["id"]
    base = {"name": "a", "hosts": ["a.localhost"], "pool": pool_id, "acme": True}
    bad = staff_api.post("/api/v1/routes/", {**base, "acme_challenge": "smtp-01"}, format="json")
    assert bad.status_code == 400 and "acme_challenge" in bad.json()
    bad = staff_api.post("/api/v1/routes/", {**base, "acme_profile": "short lived"}, format="json")
    assert bad.status_code == 400
    assert bad.json()["acme_profile"] == ["a profile name is letters, digits, '.', '_' and '-' "
                                          "(e.g. classic, tlsserver, shortlived)"]
    bad = staff_api.post("/api/v1/routes/", {**base, "acme_challenge": "dns-01"}, format="json")
    assert bad.status_code == 400 and "DNS-01 needs the operator's DNS server" in bad.json()["acme_challenge"][0]
    made = staff_api.post("/api/v1/routes/", {**base, "acme_challenge": "tls-alpn-01", "acme_profile": "shortlived"},
                          format="json")
    assert made.status_code == 201, made.json()
    body = made.json()
    assert (body["acme_challenge"], body["acme_profile"]) == ("tls-alpn-01", "shortlived")
    assert body["acme_status"]["challenge"] == "tls-alpn-01" and body["acme_status"]["profile"] == "shortlived"
    patched = staff_api.patch(f"/api/v1/routes/{body['id']}/", {"acme_challenge": ""}, format="json").json()
    assert patched["acme_status"]["challenge"] == "http-01"  # the installation's default


def test_the_default_method_is_a_setting(acme_on):
    acme_on.SWITCHYARD_ACME_CHALLENGE = "tls-alpn-01"
    r = route("d", hosts=["d.localhost"], acme=True)
    assert services.method_for(r) == "tls-alpn-01"
    acme_on.SWITCHYARD_ACME_DNS_SERVER, acme_on.SWITCHYARD_ACME_DNS_ZONE = "127.0.0.1:53", "localhost"
    w = route("w", hosts=["*.w.localhost"], acme=True)
    assert services.method_for(w) == "dns-01"  # wildcards go to DNS-01 when it is configured


def test_tls_alpn01_challenges_are_published_as_the_node_parses_them(acme_on):
    r = route("t", hosts=["t.localhost"], acme=True)
    order = Order.objects.get(route=r)
    token = "tok_ALPN-1"
    key_auth = token + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
    cert_pem, key_pem = client.tls_alpn01_certificate("t.localhost", key_auth)
    services.publish_challenges(order, [client.Http01("t.localhost", token, key_auth, None, client.TLS_ALPN_01,
                                                      cert_pem, key_pem)])
    snapshot = publisher.current_version().snapshot
    assert snapshot["acme_challenges"]["http01"] == []
    parsed = schema.parse_snapshot(snapshot).acme_challenges.tls_alpn01
    assert [(c.host, c.certificate_pem) for c in parsed] == [("t.localhost", cert_pem)]


def test_switching_acme_off_keeps_the_certificate_and_stops_renewal(acme_on):
    r = route("s", hosts=["s.localhost"], acme=True)
    chain, key = issue("s.localhost")
    order = Order.objects.get(route=r)
    cert = services.store_certificate(order, chain, key)
    assert services.due_orders(order.renew_at) == [order.pk]
    proxy_services.update_route(ACTOR, r, acme=False)
    r.refresh_from_db()
    assert r.certificate_id == cert.pk and not Order.objects.exists()
    assert services.due_orders(cert.not_after) == []
    shown = services.status(r)
    assert shown["state"] == "off" and shown["certificate"] == cert.pk and shown["not_after"] == cert.not_after
    assert publisher.current_version().snapshot["routes"][0]["certificate"] == cert.pk
    uploaded = route("u", hosts=["u.example.com"], certificate=certificate("up", names=("u.example.com",)))
    assert services.status(uploaded) is None  # an uploaded certificate is not an ACME one


def test_a_renewal_order_names_the_certificate_it_replaces(acme_on):
    r = route("r", hosts=["r.localhost"], acme=True)
    order = Order.objects.get(route=r)
    assert issuance._replaces(order) == ""
    chain, key = issue("r.localhost")
    services.store_certificate(order, chain, key)
    order.refresh_from_db()
    assert issuance._replaces(order) == ari.cert_id(chain)
    ids = [client.messages.Identifier(typ=client.messages.IDENTIFIER_FQDN, value="r.localhost")]
    body = json.loads(client._NewOrder(identifiers=ids, profile="shortlived", replaces=ari.cert_id(chain)).json_dumps())
    assert body == {"identifiers": [{"type": "dns", "value": "r.localhost"}], "profile": "shortlived",
                    "replaces": ari.cert_id(chain)}


@pytest.fixture(scope="module")
def pebble_eab(tmp_path_factory):
    require()
    ca = Pebble(tmp_path_factory.mktemp("pebble-eab"), eab_keys={EAB_KID: EAB_HMAC}).start()
    yield ca
    ca.close()


def test_the_account_is_registered_with_external_account_binding(settings, pebble_eab):
    settings.SWITCHYARD_ACME_DIRECTORY = pebble_eab.directory
    settings.SWITCHYARD_ACME_CA_BUNDLE = str(pebble_eab.ca_bundle)
    with pytest.raises(client.AcmeFailure) as refused:  # the CA requires EAB
        services.account_client(client.configured())
    assert "account registration refused" in str(refused.value)
    settings.SWITCHYARD_ACME_EAB_KID, settings.SWITCHYARD_ACME_EAB_HMAC = EAB_KID, EAB_HMAC
    services.account_client(client.configured())
    account = Account.objects.get()
    assert account.uri.startswith(pebble_eab.directory.rsplit("/", 1)[0])
    assert timezone.now() >= account.created


def test_changing_the_method_retries_a_failed_order_at_once_and_waits_for_renewal_when_issued(acme_on):
    r = route("m", hosts=["m.localhost"], acme=True)
    order = Order.objects.get(route=r)
    assert (order.challenge, order.profile) == ("http-01", "")
    services.record_failure(order, "urn:ietf:params:acme:error:connection: port 80 is closed", timezone.now())
    r = proxy_services.update_route(ACTOR, r, acme_challenge="tls-alpn-01")
    order.refresh_from_db()
    assert (order.state, order.failures, order.next_retry, order.challenge) == ("pending", 0, None, "tls-alpn-01")
    chain, key = issue("m.localhost")
    services.store_certificate(order, chain, key)
    proxy_services.update_route(ACTOR, r, acme_profile="shortlived")
    order.refresh_from_db()
    assert (order.state, order.profile) == ("valid", "shortlived")  # used by the next renewal
