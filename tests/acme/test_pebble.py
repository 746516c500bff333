"""The control plane's side of an order against a real ACME CA: Debian's Pebble, with
pebble-challtestsrv as its DNS and as the HTTP-01 responder standing in for the nodes
(it answers exactly what the published config version carries; the node's ACK of that
version is recorded the way the sync consumer records it). The whole chain with a real
node, worker and Daphne is tests/e2e/test_acme.py."""
import datetime as dt

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
from django.utils import timezone

from controlplane.acme import client, issuance, services
from controlplane.acme.models import Account, Challenge, Order
from controlplane.alerts.models import Alert
from controlplane import crypto
from controlplane.proxy.models import Certificate, Route
from controlplane.publishing import publisher
from controlplane.publishing.consumers import record_ack
from controlplane.publishing.models import ConfigVersion, Node
from tests.acme.pebble import Pebble, require
from tests.controlplane.helpers import route

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def pebble(tmp_path_factory):
    require()
    ca = Pebble(tmp_path_factory.mktemp("pebble")).start()
    yield ca
    ca.close()


@pytest.fixture
def acme_ca(settings, pebble):
    settings.SWITCHYARD_ACME_DIRECTORY = pebble.directory
    settings.SWITCHYARD_ACME_CA_BUNDLE = str(pebble.ca_bundle)
    settings.SWITCHYARD_ACME_EMAIL = "ops@example.test"
    settings.SWITCHYARD_ACME_RETRY_BASE_SECONDS = 30
    return pebble


@pytest.fixture
def node(db):
    row, _token = Node.register("edge-1")
    Node.objects.filter(pk=row.pk).update(connected=True)
    return row


def answer_and_ack(pebble, node, version: int) -> None:
    """What a node does with a version: answer its challenges, then ACK it."""
    stored = ConfigVersion.objects.get(number=version)
    for c in stored.snapshot.get("acme_challenges", {}).get("http01", []):
        pebble.add_http01(c["token"], c["key_authorization"])
    record_ack(node.pk, "nonce", version, stored.sha256, 1.0)


def obtain(order: Order, pebble, node, answer: bool = True) -> tuple[str, str]:
    acme = services.account_client(client.configured())
    key_pem = client.new_private_key()
    ca_order = acme.new_order(order.names, key_pem)
    pending = acme.http01(ca_order)
    assert {c.host for c in pending} == set(order.names)
    version = services.publish_challenges(order, pending)
    if answer:
        answer_and_ack(pebble, node, version)
    else:
        record_ack(node.pk, "nonce", version, ConfigVersion.objects.get(number=version).sha256, 1.0)
    services.wait_for_nodes(version, timeout=5)
    return acme.validate_and_finish(ca_order, pending, 60), key_pem


def verify_chain(chain_pem: str, root_pem: str, host: str) -> x509.Certificate:
    certs = x509.load_pem_x509_certificates(chain_pem.encode())
    store = Store([x509.load_pem_x509_certificate(root_pem.encode())])
    verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName(host))
    verifier.verify(certs[0], certs[1:])
    return certs[0]


def test_order_is_issued_stored_attached_and_renewed_in_place(acme_ca, node):
    r = route("shop", hosts=["shop.example.com", "www.shop.example.com"], acme=True)
    order = services.claim(Order.objects.get(route=r).pk, timezone.now())
    chain, key = obtain(order, acme_ca, node)
    cert = services.store_certificate(order, chain, key)
    services.release(order)

    account = Account.objects.get()
    assert "PRIVATE KEY" not in account.key_encrypted
    assert "PRIVATE KEY" in crypto.decrypt(account.key_encrypted)
    assert account.uri.startswith(f"https://127.0.0.1:{acme_ca.acme_port}/")
    assert cert.source == Certificate.ACME and cert.tenant is None
    assert "PRIVATE KEY" in crypto.decrypt(cert.private_key_encrypted)
    assert sorted(cert.sans) == ["shop.example.com", "www.shop.example.com"]
    leaf = verify_chain(cert.certificate_pem, acme_ca.root_pem(), "www.shop.example.com")
    assert Route.objects.get(pk=r.pk).certificate_id == cert.pk
    order.refresh_from_db()
    assert (order.state, order.certificate_id, order.error, order.started) == ("valid", cert.pk, "", None)
    lifetime = cert.not_after - cert.not_before
    assert abs(order.renew_at - (cert.not_before + lifetime * 2 / 3)) < dt.timedelta(seconds=1)
    snapshot = publisher.current_version().snapshot
    assert not Challenge.objects.exists() and "acme_challenges" not in snapshot
    assert [c["id"] for c in snapshot["certificates"]] == [cert.pk]
    assert snapshot["routes"][0]["certificate"] == cert.pk

    # renewal: due at renew_at, same certificate row, new certificate, same account
    assert services.due_orders(order.renew_at) == [order.pk]
    order = services.claim(order.pk, order.renew_at)
    chain, key = obtain(order, acme_ca, node)
    renewed = services.store_certificate(order, chain, key)
    services.release(order)
    assert renewed.pk == cert.pk and renewed.fingerprint != cert.fingerprint
    assert verify_chain(renewed.certificate_pem, acme_ca.root_pem(), "shop.example.com").serial_number \
        != leaf.serial_number
    assert Account.objects.count() == 1


def test_unanswered_challenge_fails_with_the_ca_s_error(acme_ca, node, settings):
    settings.SWITCHYARD_ACME_PROPAGATION_SECONDS = 5
    r = route("blog", hosts=["blog.example.com"], acme=True)
    order = services.claim(Order.objects.get(route=r).pk, timezone.now())
    with pytest.raises(client.AcmeFailure) as raised:
        obtain(order, acme_ca, node, answer=False)
    services.record_failure(order, str(raised.value), timezone.now())
    services.release(order)
    order.refresh_from_db()
    assert order.state == "failed" and "blog.example.com" in order.error
    assert order.next_retry > timezone.now() + dt.timedelta(seconds=25)
    assert Alert.objects.filter(kind="acme_failed").count() == 1
    assert Route.objects.get(pk=r.pk).certificate_id is None


def test_the_ca_is_not_asked_before_every_node_applied_the_challenges(acme_ca, node, settings):
    settings.SWITCHYARD_ACME_PROPAGATION_SECONDS = 0.3
    r = route("slow", hosts=["slow.example.com"], acme=True)
    assert issuance.run(Order.objects.get(route=r).pk) == issuance.FAILED  # the node never ACKs
    order = Order.objects.get(route=r)
    assert "node(s) edge-1 did not apply config version" in order.error
    assert not Challenge.objects.exists()


def test_no_connected_node_fails_at_once(acme_ca, db):
    r = route("lonely", hosts=["lonely.example.com"], acme=True)
    assert issuance.run(Order.objects.get(route=r).pk) == issuance.FAILED
    assert Order.objects.get(route=r).error == "no data-plane node is connected to answer the challenge"
