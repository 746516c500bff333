"""Certificate upload and the expiry scan, with a real SMTP server and a real webhook
receiver. Time moves through the scan's ``now`` argument; nothing sleeps."""
import datetime as dt

import pytest
import trustme
from django.core.exceptions import ValidationError

from controlplane.alerts.models import Alert, Delivery
from controlplane import crypto, pem
from controlplane.certs import tasks
from controlplane.certs.services import replace_certificate, upload_certificate
from controlplane.proxy.models import Certificate, Pool, Route
from controlplane.tenancy.models import Tenant
from tests.alerts.servers import (  # noqa: F401 - fixtures
    WEBHOOK_SECRET,
    eager_celery,
    smtp_server,
    webhook_server,
)

pytestmark = pytest.mark.django_db
DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def ca_bundle(ca, tmp_path, settings):
    """The test CA, trusted through the operator's SWITCHYARD_CA_BUNDLE file."""
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.cert_pem.bytes())
    settings.SWITCHYARD_CA_BUNDLE = str(path)
    return path


def issue(ca, *hosts, days):
    """(certificate_pem, private_key_pem, not_after) of a leaf valid for ``days`` more days."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    leaf = ca.issue_cert(*(hosts or ("shop.example.test",)), not_before=now - DAY, not_after=now + days * DAY)
    chain = "".join(blob.bytes().decode() for blob in leaf.cert_chain_pems)
    return chain, leaf.private_key_pem.bytes().decode(), now + days * DAY


@pytest.fixture
def channels(db, webhook_server, smtp_server):
    from controlplane.alerts.models import AlertChannel
    mail = AlertChannel.objects.create(name="ops mail", kind="email", emails=["oncall@example.test"])
    hook = AlertChannel(name="ops hook", kind="webhook", url=webhook_server.url())
    hook.secret = WEBHOOK_SECRET
    hook.save()
    return mail, hook


@pytest.fixture
def upload(ca_bundle, eager_celery, django_capture_on_commit_callbacks):
    def do(certificate_pem, private_key_pem, **kwargs):
        kwargs.setdefault("name", "shop")
        with django_capture_on_commit_callbacks(execute=True):
            return upload_certificate(None, certificate_pem=certificate_pem, private_key_pem=private_key_pem,
                                      **kwargs)
    return do


@pytest.fixture
def scan(eager_celery, django_capture_on_commit_callbacks):
    def do(now):
        with django_capture_on_commit_callbacks(execute=True):
            return tasks.scan_expiry.apply(kwargs={"now": now}).get()
    return do


def test_it_alerts_once_for_the_14_day_threshold_of_a_cert_expiring_in_10_days(
        ca, channels, upload, scan, smtp_server, webhook_server):
    cert_pem, key_pem, not_after = issue(ca, days=10)
    cert = upload(cert_pem, key_pem)

    # The scan ran right after the upload: one e-mail, one webhook, for 14 days (not also 30).
    assert len(smtp_server.messages) == 1 and len(webhook_server.requests) == 1
    [alert] = Alert.objects.all()
    assert alert.kind == "certificate_expiring"
    assert alert.data["threshold_days"] == 14 and alert.data["certificate_id"] == cert.pk
    assert alert.subject.startswith("Certificate shop (platform) expires in 10 days (within 14 days), on ")
    assert smtp_server.messages[0]["subject"] == "[Switchyard] " + alert.subject
    payload = webhook_server.requests[0].json
    assert webhook_server.requests[0].signature_valid
    assert payload["kind"] == "certificate_expiring" and payload["data"]["threshold_days"] == 14
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.SENT}

    # The daily scans after it stay quiet until the next threshold is crossed.
    now = dt.datetime.now(dt.timezone.utc)
    assert scan(now) == 0
    assert scan(now + DAY) == 0
    assert scan(not_after - 8 * DAY) == 0
    assert len(smtp_server.messages) == 1 and len(webhook_server.requests) == 1

    assert scan(not_after - 6 * DAY) == 1      # crossed 7 days
    assert scan(not_after - 6 * DAY + dt.timedelta(hours=1)) == 0
    assert scan(not_after - DAY / 2) == 1      # skipped the 3-day scan: only 1 day alerts
    assert [a.data["threshold_days"] for a in Alert.objects.order_by("id")] == [14, 7, 1]
    assert len(smtp_server.messages) == 3 and len(webhook_server.requests) == 3


def test_it_alerts_certificate_expired_once(ca, channels, upload, scan, smtp_server, webhook_server):
    cert_pem, key_pem, not_after = issue(ca, days=2)
    upload(cert_pem, key_pem)                  # 2 days left: the 3-day threshold
    assert scan(not_after + dt.timedelta(minutes=1)) == 1
    assert scan(not_after + 3 * DAY) == 0
    assert list(Alert.objects.order_by("id").values_list("kind", flat=True)) == [
        "certificate_expiring", "certificate_expired"]
    expired = Alert.objects.get(kind="certificate_expired")
    assert expired.data["threshold"] == "expired" and "expired on" in expired.subject
    assert [r.json["kind"] for r in webhook_server.requests] == ["certificate_expiring", "certificate_expired"]
    assert len(smtp_server.messages) == 2


def test_it_alerts_a_renewed_certificate_again_only_when_it_crosses_a_threshold(
        ca, channels, upload, scan, smtp_server, django_capture_on_commit_callbacks):
    cert_pem, key_pem, not_after = issue(ca, days=10)
    cert = upload(cert_pem, key_pem)
    assert len(smtp_server.messages) == 1

    renewed_pem, renewed_key, renewed_after = issue(ca, days=90)
    with django_capture_on_commit_callbacks(execute=True):
        replace_certificate(None, cert, certificate_pem=renewed_pem, private_key_pem=renewed_key)
    cert.refresh_from_db()
    assert cert.not_after == renewed_after
    assert len(smtp_server.messages) == 1      # 90 days left: nothing to say
    assert scan(dt.datetime.now(dt.timezone.utc) + DAY) == 0
    assert scan(renewed_after - 31 * DAY) == 0
    assert scan(renewed_after - 29 * DAY) == 1
    assert scan(renewed_after - 29 * DAY) == 0
    latest = Alert.objects.order_by("-id").first()
    assert latest.data["threshold_days"] == 30 and latest.data["fingerprint"] == cert.fingerprint
    assert len(smtp_server.messages) == 2


def test_it_sends_a_tenant_certificate_alert_to_the_tenant_and_the_platform_only(
        ca, ca_bundle, smtp_server, upload):
    from controlplane.alerts.models import AlertChannel
    shop = Tenant.objects.create(slug="shop", name="Shop")
    shop.delegations.create(suffix="shop.example.test")  # a tenant certificate names delegated hosts only
    blog = Tenant.objects.create(slug="blog", name="Blog")
    AlertChannel.objects.create(name="shop", tenant=shop, kind="email", emails=["shop@example.test"])
    AlertChannel.objects.create(name="blog", tenant=blog, kind="email", emails=["blog@example.test"])
    AlertChannel.objects.create(name="ops", kind="email", emails=["ops@example.test"])
    cert_pem, key_pem, _ = issue(ca, days=5)
    upload(cert_pem, key_pem, tenant=shop)
    assert sorted(m["to"][0] for m in smtp_server.messages) == ["ops@example.test", "shop@example.test"]
    assert "(shop)" in smtp_server.messages[0]["subject"]


@pytest.mark.parametrize("left, expected", [
    (45 * DAY, None), (30 * DAY + dt.timedelta(seconds=1), None), (30 * DAY, 30), (20 * DAY, 30),
    (10 * DAY, 14), (7 * DAY, 7), (5 * DAY, 7), (2 * DAY, 3), (DAY / 2, 1), (dt.timedelta(0), "expired"),
    (-3 * DAY, "expired"),
])
def test_it_picks_only_the_smallest_crossed_threshold(left, expected):
    now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    assert tasks.crossed_threshold(now + left, now) == expected


def test_it_stores_parsed_fields_warnings_and_an_encrypted_key(ca, upload, settings):
    cert_pem, key_pem, not_after = issue(ca, "shop.example.test", "*.shop.example.test", days=60)
    cert = Certificate.objects.get(pk=upload(cert_pem, key_pem, name="shop wildcard").pk)
    assert cert.sans == ["shop.example.test", "*.shop.example.test"]
    assert cert.not_after == not_after and cert.fingerprint and cert.source == Certificate.UPLOADED
    assert cert.chain_status == pem.CHAIN_COMPLETE and cert.warnings == []
    assert "PRIVATE KEY" not in cert.private_key_encrypted
    assert crypto.decrypt(cert.private_key_encrypted).strip() == key_pem.strip()

    # Without the operator bundle the private CA is not trusted: stored, with a warning.
    settings.SWITCHYARD_CA_BUNDLE = ""
    other = upload(cert_pem, key_pem, name="untrusted")
    assert other.chain_status == pem.CHAIN_UNTRUSTED or other.chain_status == pem.CHAIN_INCOMPLETE
    assert other.warnings


def test_it_refuses_bad_uploads_naming_the_field(ca, upload):
    cert_pem, key_pem, _ = issue(ca, days=60)
    _, other_key, _ = issue(ca, days=60)
    cases = [
        ({"certificate_pem": cert_pem, "private_key_pem": other_key}, "private_key_pem", "does not match"),
        ({"certificate_pem": cert_pem, "private_key_pem": ""}, "private_key_pem", "required"),
        ({"certificate_pem": "hello", "private_key_pem": key_pem}, "certificate_pem", "PEM"),
    ]
    for kwargs, field, words in cases:
        with pytest.raises(ValidationError) as info:
            upload(**kwargs)
        assert field in info.value.message_dict, info.value.message_dict
        assert words in " ".join(info.value.message_dict[field])
    assert not Certificate.objects.exists() and not Alert.objects.exists()


def test_it_refuses_a_replacement_that_no_longer_covers_a_route(ca, upload, django_capture_on_commit_callbacks):
    cert_pem, key_pem, _ = issue(ca, "shop.example.test", days=60)
    cert = upload(cert_pem, key_pem)
    Route.objects.create(name="shop", hosts=["shop.example.test"], pool=Pool.objects.create(name="web"),
                         certificate=cert)
    wrong_pem, wrong_key, _ = issue(ca, "blog.example.test", days=60)
    with pytest.raises(ValidationError) as info:
        replace_certificate(None, cert, certificate_pem=wrong_pem, private_key_pem=wrong_key)
    assert "shop.example.test" in " ".join(info.value.message_dict["certificate_pem"])
    cert.refresh_from_db()
    assert cert.sans == ["shop.example.test"]


def test_it_registers_the_daily_scan_in_celery_beat(db):
    from django_celery_beat.models import PeriodicTask

    from controlplane.celery import app

    task = PeriodicTask.objects.get(name="certificate-expiry-scan")  # created by post_migrate
    assert task.task == "controlplane.certs.tasks.scan_expiry" and task.enabled
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("15", "4", "*")
    tasks.ensure_schedules()
    tasks.ensure_schedules()
    assert PeriodicTask.objects.filter(name="certificate-expiry-scan").count() == 1
    app.loader.import_default_modules()
    assert "controlplane.certs.tasks.scan_expiry" in app.tasks
    assert "controlplane.alerts.tasks.deliver" in app.tasks


def test_it_scans_a_certificate_stored_through_any_path(ca, ca_bundle, eager_celery, smtp_server,
                                                        django_capture_on_commit_callbacks):
    from controlplane.alerts.models import AlertChannel
    from controlplane.proxy import services as proxy_services
    AlertChannel.objects.create(name="ops", kind="email", emails=["ops@example.test"])
    cert_pem, key_pem, _ = issue(ca, days=25)
    with django_capture_on_commit_callbacks(execute=True):
        proxy_services.create_certificate(None, name="via admin", certificate_pem=cert_pem,
                                          private_key_pem=key_pem, ca_bundle_pem=ca.cert_pem.bytes().decode())
    assert [a.data["threshold_days"] for a in Alert.objects.all()] == [30]
    assert len(smtp_server.messages) == 1


def test_it_audits_uploads_and_replacements_without_the_key(ca, upload, django_capture_on_commit_callbacks):
    from django.contrib.auth.models import User

    from controlplane.audit.models import AuditEntry
    from controlplane.audit.services import Actor
    alice = User.objects.create_user("alice")
    cert_pem, key_pem, _ = issue(ca, days=60)
    with django_capture_on_commit_callbacks(execute=True):
        cert = upload_certificate(Actor(user=alice), name="shop", certificate_pem=cert_pem,
                                  private_key_pem=key_pem, note="first upload")
        renewed_pem, renewed_key, _ = issue(ca, days=90)
        replace_certificate(Actor(user=alice), cert, certificate_pem=renewed_pem, private_key_pem=renewed_key,
                            note="renewal")
    entries = list(AuditEntry.objects.filter(object_type="certificate").order_by("id"))
    assert [(e.actor, e.action, e.note) for e in entries] == [
        ("alice", "create", "first upload"), ("alice", "update", "renewal")]
    for entry in entries:
        assert "PRIVATE KEY" not in str(entry.before) + str(entry.after)
