"""DNS-01 against real parts: Debian's Pebble resolving through a loopback DNS server that
takes TSIG-signed RFC 2136 updates (tests/acme/dnsserver.py, dnspython). A wildcard
route's order writes its TXT record by dynamic update, Pebble validates it, the
certificate is stored and attached, and the record is removed again."""
import pytest
from django.core.exceptions import ValidationError

from controlplane.acme import client, dns01, issuance
from controlplane.acme.models import Order
from controlplane.proxy.models import Route
from tests.acme.dnsserver import DnsServer
from tests.acme.pebble import Pebble, require
from tests.acme.test_pebble import verify_chain
from tests.controlplane.helpers import route

pytestmark = pytest.mark.django_db
ZONE = "dyn.example.test."


@pytest.fixture(scope="module")
def dns_server():
    server = DnsServer(ZONE).start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def pebble_dns(tmp_path_factory, dns_server):
    require()
    ca = Pebble(tmp_path_factory.mktemp("pebble-dns"), dns_server=f"127.0.0.1:{dns_server.port}").start()
    yield ca
    ca.close()


@pytest.fixture
def dns_settings(settings, dns_server, pebble_dns):
    settings.SWITCHYARD_ACME_DIRECTORY = pebble_dns.directory
    settings.SWITCHYARD_ACME_CA_BUNDLE = str(pebble_dns.ca_bundle)
    settings.SWITCHYARD_ACME_DNS_SERVER = f"127.0.0.1:{dns_server.port}"
    settings.SWITCHYARD_ACME_DNS_ZONE = ZONE
    settings.SWITCHYARD_ACME_DNS_TSIG_NAME = dns_server.key_name
    settings.SWITCHYARD_ACME_DNS_TSIG_SECRET = dns_server.secret
    settings.SWITCHYARD_ACME_PROPAGATION_SECONDS = 10
    return settings


def test_a_wildcard_order_is_validated_by_dynamic_update(dns_settings, dns_server, pebble_dns):
    before = len(dns_server.updates)
    r = route("apps", hosts=["*.apps.dyn.example.test", "apps.dyn.example.test"], acme=True)
    order = Order.objects.get(route=r)
    assert issuance.run(order.pk) == issuance.OK, Order.objects.get(pk=order.pk).error
    cert = Route.objects.get(pk=r.pk).certificate
    assert cert is not None and cert.source == "acme"
    assert sorted(cert.sans) == ["*.apps.dyn.example.test", "apps.dyn.example.test"]
    verify_chain(cert.certificate_pem, pebble_dns.root_pem(), "anything.apps.dyn.example.test")
    added, removed = dns_server.updates[before], dns_server.updates[-1]
    # both authorizations (the wildcard and its base) validate at the same name
    assert all("_acme-challenge.apps.dyn.example.test. 60 IN TXT" in rr for rr in added)
    assert sum(len(rr.splitlines()) for rr in added) == 2 and all(" NONE TXT " in rr for rr in removed)
    assert dns_server.txt("_acme-challenge.apps.dyn.example.test.") == set()


def test_a_cname_delegated_name_is_written_into_switchyard_s_zone(dns_settings, dns_server, pebble_dns):
    """shop.customer.test is not in the zone: its owner delegated _acme-challenge by CNAME."""
    dns_server.add_record("_acme-challenge.shop.customer.test.", "CNAME", "shop.customer.test." + ZONE)
    assert dns01.record_name("*.shop.customer.test", ZONE) == "shop.customer.test." + ZONE
    r = route("shop", hosts=["*.shop.customer.test"], acme=True)
    assert issuance.run(Order.objects.get(route=r).pk) == issuance.OK, Order.objects.get(route=r).error
    verify_chain(Route.objects.get(pk=r.pk).certificate.certificate_pem, pebble_dns.root_pem(),
                 "www.shop.customer.test")


def test_a_wrong_tsig_key_fails_the_order_with_the_server_s_answer(dns_settings, dns_server):
    dns_settings.SWITCHYARD_ACME_DNS_TSIG_SECRET = "c2VjcmV0LXRoYXQtaXMtd3Jvbmc="
    r = route("bad", hosts=["*.bad.dyn.example.test"], acme=True)
    assert issuance.run(Order.objects.get(route=r).pk) == issuance.FAILED
    order = Order.objects.get(route=r)
    assert order.state == "failed" and "refused the update" in order.error and "NOTAUTH" in order.error
    assert dns_server.txt("_acme-challenge.bad.dyn.example.test.") == set()


def test_a_wildcard_without_dns01_is_refused_with_a_clear_error(settings):
    settings.SWITCHYARD_ACME_DIRECTORY = "https://ca.invalid/dir"
    settings.SWITCHYARD_ACME_DNS_SERVER = ""
    with pytest.raises(ValidationError) as raised:
        route("w", hosts=["*.w.localhost"], acme=True)
    assert raised.value.message_dict["acme"] == [
        "*.w.localhost: wildcards need DNS-01, which this installation does not offer (the operator has not "
        "set SWITCHYARD_ACME_DNS_SERVER and SWITCHYARD_ACME_DNS_ZONE)"]
    with pytest.raises(ValidationError) as raised:
        route("d", hosts=["d.localhost"], acme=True, acme_challenge="dns-01")
    assert "DNS-01 needs the operator's DNS server" in raised.value.message_dict["acme_challenge"][0]


def test_a_wildcard_with_another_method_named_is_refused(dns_settings):
    with pytest.raises(ValidationError) as raised:
        route("w", hosts=["*.w.dyn.example.test"], acme=True, acme_challenge="http-01")
    assert raised.value.message_dict["acme_challenge"] == [
        "*.w.dyn.example.test: a wildcard can only be validated with DNS-01, not http-01"]


def test_server_settings_are_parsed():
    assert dns01.split_server("10.0.0.53") == ("10.0.0.53", 53)
    assert dns01.split_server("ns.example.test:5353") == ("ns.example.test", 5353)
    assert dns01.split_server("[::1]:5300") == ("::1", 5300)
    assert dns01.record_name("a.dyn.example.test", ZONE) == "_acme-challenge.a.dyn.example.test."
    assert client.Http01("h", "t", "t.x", None).dns_value == "UVLxQWLcHz8Z2XulQMkIPuNlOaaPXr19kevx3BOOHBM"
