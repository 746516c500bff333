"""The one gate at publish time: whatever wrote the rows (services,
admin, a migration, a rollback, a direct ORM update), ``publisher.publish`` builds the
node's tables from the would-be snapshot, private keys included, and refuses what a node
would refuse, naming the field and the object; no version is stored."""
import pytest
from django.core.exceptions import ValidationError

from controlplane import crypto
from controlplane.proxy.models import Certificate, Pool, Route
from controlplane.publishing import publisher
from controlplane.publishing.models import ConfigVersion

from .helpers import ACTOR, certificate, issue, route, tenant

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def encryption_key(settings):
    settings.SWITCHYARD_ENCRYPTION_KEY = "test-encryption-key"


def refused_publish() -> dict:
    before = list(ConfigVersion.objects.values_list("number", flat=True))
    with pytest.raises(ValidationError) as exc:
        publisher.publish(ACTOR, "bypassed validation")
    assert list(ConfigVersion.objects.values_list("number", flat=True)) == before
    return exc.value.message_dict


def test_it_refuses_a_header_value_no_node_can_encode():
    shop = tenant("shop")
    r = route("api", shop)
    Route.objects.filter(pk=r.pk).update(response_headers={"set": [{"name": "X-N", "value": "5\u20ac"}]})
    errors = refused_publish()
    assert list(errors) == ["response_headers"]
    assert errors["response_headers"][0].startswith("route shop/api: set[0].value: contains '€' (U+20AC)")


def test_it_refuses_a_ca_bundle_no_node_can_load():
    r = route("api")
    Pool.objects.filter(pk=r.pool_id).update(tls_enabled=True, tls_ca_pem="-----BEGIN CERTIFICATE-----\nx\n")
    errors = refused_publish()
    assert list(errors) == ["tls_ca_pem"] and errors["tls_ca_pem"][0].startswith("pool api-pool: ")


def test_it_refuses_a_sticky_cookie_that_would_split_a_response():
    r = route("api")
    Pool.objects.filter(pk=r.pool_id).update(sticky_cookie="s=1\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK")
    assert list(refused_publish()) == ["sticky_cookie"]


def test_it_refuses_a_regex_re2_does_not_run():
    r = route("api")
    Route.objects.filter(pk=r.pk).update(path="^/(?!admin)", path_type="regex")
    errors = refused_publish()
    assert list(errors) == ["path"] and "RE2" in errors["path"][0]


def test_it_loads_every_certificate_with_its_private_key():
    shop = tenant("shop")
    cert = certificate("shop-cert", shop)
    route("api", shop, certificate=cert)
    _, other_key = issue("api.shop.example.com")
    Certificate.objects.filter(pk=cert.pk).update(private_key_encrypted=crypto.encrypt(other_key))
    errors = refused_publish()
    assert list(errors) == ["certificate_pem"]
    assert errors["certificate_pem"][0].startswith("certificate shop/shop-cert: ")
    assert "mismatch" in errors["certificate_pem"][0].lower()


def test_a_rollback_to_a_version_a_node_would_refuse_stores_nothing():
    r = route("api")
    good = publisher.current_version()
    bad = dict(good.snapshot, routes=[dict(good.snapshot["routes"][0],
                                           request_headers={"set": [{"name": "X-A", "value": "a\x7f"}],
                                                            "add": [], "remove": []})])
    ConfigVersion.objects.create(number=good.number + 1, sha256="0" * 64, snapshot=bad, author="legacy")
    route("other")
    numbers = list(ConfigVersion.objects.values_list("number", flat=True))
    with pytest.raises(ValidationError) as exc:
        publisher.rollback(ACTOR, good.number + 1)
    assert "request_headers: set[0].value: contains U+007F" in str(exc.value.message_dict)
    assert list(ConfigVersion.objects.values_list("number", flat=True)) == numbers
    assert Route.objects.get(pk=r.pk).request_headers != bad["routes"][0]["request_headers"]
