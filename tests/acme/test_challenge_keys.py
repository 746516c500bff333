"""A TLS-ALPN-01 validation key is carried like a certificate's private key: encrypted at
rest, never in a stored snapshot (nor hashed), filled in just before a push; the node
applies what the push carries."""
import pytest

from controlplane import crypto
from controlplane.acme import client, services
from controlplane.acme.models import Challenge, Order
from controlplane.publishing import publisher
from controlplane.publishing.compiler import materialize
from dataplane import schema
from dataplane.applier import check_snapshot
from tests.controlplane.helpers import route

pytestmark = pytest.mark.django_db
KEY_AUTH = "tok_ALPN-2.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


@pytest.fixture
def acme_on(settings):
    settings.SWITCHYARD_ACME_DIRECTORY = "https://ca.invalid/dir"
    return settings


def test_the_validation_key_is_encrypted_at_rest_and_only_on_the_wire(acme_on):
    r = route("t", hosts=["t.localhost"], acme=True, acme_challenge="tls-alpn-01")
    order = Order.objects.get(route=r)
    cert_pem, key_pem = client.tls_alpn01_certificate("t.localhost", KEY_AUTH)
    services.publish_challenges(order, [client.Http01("t.localhost", "tok_ALPN-2", KEY_AUTH, None,
                                                      client.TLS_ALPN_01, cert_pem, key_pem)])
    row = Challenge.objects.get()
    assert key_pem not in row.private_key_encrypted and crypto.decrypt(row.private_key_encrypted) == key_pem
    version = publisher.current_version()
    stored = version.snapshot
    assert stored["acme_challenges"]["tls_alpn01"] == [{"host": "t.localhost", "certificate_pem": cert_pem}]
    pushed = materialize(stored)
    assert pushed["acme_challenges"]["tls_alpn01"][0]["private_key_pem"] == key_pem
    assert schema.snapshot_hash(pushed) == version.sha256 == schema.snapshot_hash(stored)
    check_snapshot(pushed)  # the node applies it (the key matches the certificate)
    # withdrawn since: an old version materializes with no key, which the node skips
    Challenge.objects.all().delete()
    old = materialize(stored)
    assert old["acme_challenges"]["tls_alpn01"][0]["private_key_pem"] == ""
    check_snapshot(old)
