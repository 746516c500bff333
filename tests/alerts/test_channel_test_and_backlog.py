"""A channel's "Send test" button, the open alerts a new channel receives once, and the
channel form that shows the fields of the chosen kind: the dashboard through Django's
test client, deliveries to a real SMTP server and a real HTTP receiver on loopback."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from controlplane.alerts import services
from controlplane.alerts.models import Alert, AlertChannel, Delivery
from controlplane.audit.models import AuditEntry
from controlplane.audit.services import Actor
from tests.alerts.servers import WEBHOOK_SECRET
from tests.controlplane import helpers as h

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    user = get_user_model().objects.create_user("staff", password="pw-staff-123", is_staff=True)
    client.force_login(user)
    return client


def text(response) -> str:
    return response.content.decode().replace("&#x27;", "'")


# ------------------------------------------------------------------ send test

def test_it_sends_a_test_through_a_webhook_channel_and_shows_the_answer(staff, webhook_server, make_channel):
    channel = make_channel("ops hook", url=webhook_server.url("/ops"), secret=WEBHOOK_SECRET)
    response = staff.post(reverse("dashboard:channel_test", args=[channel.pk]), HTTP_HX_REQUEST="true")

    assert response.status_code == 200
    assert "sent" in text(response) and "127.0.0.1 answered 200" in text(response)
    [received] = webhook_server.requests
    assert received.path == "/ops" and received.signature_valid
    assert received.headers["X-Switchyard-Event"] == "test"
    assert received.json["subject"] == "Test message for alert channel ops hook"
    assert not Alert.objects.exists() and not Delivery.objects.exists()  # a test is no alert
    assert AuditEntry.objects.filter(action="test", object_type="alertchannel",
                                     object_id=str(channel.pk)).exists()


def test_it_shows_why_a_test_failed_without_javascript(staff, webhook_server, make_channel):
    webhook_server.statuses = [500]
    channel = make_channel("flaky hook", url=webhook_server.url("/flaky"))
    response = staff.post(reverse("dashboard:channel_test", args=[channel.pk]), follow=True)

    page = text(response)
    assert "Test message through flaky hook: failed, 127.0.0.1 answered 500: receiver exploded" in page
    assert len(webhook_server.requests) == 1  # once: a test is not retried


def test_it_sends_a_test_e_mail(staff, smtp_server, make_channel):
    channel = make_channel("ops mail", emails=["oncall@example.test"])
    page = text(staff.post(reverse("dashboard:channel_test", args=[channel.pk]), follow=True))

    assert "Test message through ops mail: sent, sent to oncall@example.test" in page
    [mail] = smtp_server.messages
    assert mail["to"] == ["oncall@example.test"]
    assert mail["subject"] == "[Switchyard] Test message for alert channel ops mail"


def test_it_offers_send_test_on_every_channel_it_may_edit(staff, make_channel, webhook_server):
    mail = make_channel("ops mail", emails=["oncall@example.test"])
    hook = make_channel("ops hook", url=webhook_server.url())
    page = text(staff.get(reverse("dashboard:alerts")))
    for channel in (mail, hook):
        assert f'data-send-test="{channel.pk}"' in page


def test_a_viewer_cannot_send_tests(client, make_tenant, make_channel, webhook_server):
    from controlplane.tenancy.models import Membership

    shop = make_tenant("shop", allowed_networks=["127.0.0.0/8"])
    channel = make_channel("shop hook", tenant=shop, url=webhook_server.url())
    viewer = get_user_model().objects.create_user("viewer", password="pw-viewer-123")
    Membership.objects.create(user=viewer, tenant=shop, role="viewer")
    client.force_login(viewer)

    assert f'data-send-test="{channel.pk}"' not in text(client.get(reverse("dashboard:alerts")))
    assert client.post(reverse("dashboard:channel_test", args=[channel.pk])).status_code == 403
    assert webhook_server.requests == []


# ------------------------------------------------------------------ open alerts for a new channel

@pytest.fixture
def open_and_closed_alerts(django_capture_on_commit_callbacks, eager_celery):
    """A certificate still expiring, a target that went down and came back, a target
    still down, and a renewed certificate's old alert."""
    cert = h.certificate("shop-cert")
    renewed = h.certificate("old-cert", names=("old.example.com",))
    pool = h.pool("web")
    back, down = pool.targets.first(), pool.targets.create(host="10.0.0.9", port=80)
    type(down).objects.filter(pk=down.pk).update(healthy=False)
    with django_capture_on_commit_callbacks(execute=True):
        expiring = services.raise_alert(
            "certificate_expiring", subject="Certificate shop-cert (platform) expires in 10 days",
            dedup_key=f"cert:{cert.pk}:{cert.fingerprint}:14",
            data={"certificate_id": cert.pk, "fingerprint": cert.fingerprint, "threshold_days": 14})
        services.raise_alert("certificate_expiring", subject="old-cert expires in 3 days",
                             dedup_key=f"cert:{renewed.pk}:OLD:3",
                             data={"certificate_id": renewed.pk, "fingerprint": "OLD"})
        for kind in ("target_down", "target_up"):
            services.raise_alert(kind, subject=f"Target {back.host} {kind}",
                                 dedup_key=f"target:{back.pk}:{kind}", data={"target_id": back.pk})
        still_down = services.raise_alert("target_down", subject="Target 10.0.0.9:80 in pool web is DOWN",
                                          dedup_key=f"target:{down.pk}:down", data={"target_id": down.pk})
    return {"expiring": expiring, "down": still_down}


def test_a_new_channel_receives_the_alerts_still_open_once(
        staff, webhook_server, second_webhook_server, make_channel, open_and_closed_alerts,
        django_capture_on_commit_callbacks, eager_celery):
    make_channel("older hook", url=second_webhook_server.url())  # existed before: gets nothing again
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(reverse("dashboard:channel_new"), {
            "tenant": "", "name": "new hook", "kind": "webhook", "url": webhook_server.url("/new"),
            "secret": WEBHOOK_SECRET, "enabled": "on", "send_open_alerts": "on"})
    assert response.status_code == 302

    got = [r.json["subject"] for r in webhook_server.requests]
    assert got == [open_and_closed_alerts["expiring"].subject, open_and_closed_alerts["down"].subject]
    assert all(r.signature_valid for r in webhook_server.requests)
    assert second_webhook_server.requests == []
    channel = AlertChannel.objects.get(name="new hook")
    assert set(Delivery.objects.filter(channel=channel).values_list("status", flat=True)) == {"sent"}

    # An alert raised after the channel exists reaches it once, the ordinary way.
    with django_capture_on_commit_callbacks(execute=True):
        services.raise_alert("node_disconnected", subject="Node edge-9 disconnected",
                             dedup_key="node:edge-9:disconnected")
    assert [r.json["subject"] for r in webhook_server.requests][2:] == ["Node edge-9 disconnected"]


def test_a_channel_saved_without_the_backlog_option_gets_only_new_alerts(
        webhook_server, open_and_closed_alerts, django_capture_on_commit_callbacks, eager_celery):
    channel = AlertChannel(name="api hook", kind="webhook", url=webhook_server.url())
    with django_capture_on_commit_callbacks(execute=True):
        services.save_channel(Actor.system(), channel)
    assert webhook_server.requests == []
    assert [a.pk for a in services.open_alerts(AlertChannel(created=channel.created))] == [
        open_and_closed_alerts["expiring"].pk, open_and_closed_alerts["down"].pk]


def test_a_tenant_channel_gets_only_its_tenants_open_alerts(make_tenant, webhook_server,
                                                            django_capture_on_commit_callbacks, eager_celery):
    shop, acme = make_tenant("shop", allowed_networks=["127.0.0.0/8"]), make_tenant("acme")
    pool = h.pool("acme-web", acme)
    target = pool.targets.first()
    type(target).objects.filter(pk=target.pk).update(healthy=False)
    with django_capture_on_commit_callbacks(execute=True):
        services.raise_alert("target_down", tenant=acme, subject="acme target down",
                             dedup_key=f"target:{target.pk}:down", data={"target_id": target.pk})
        services.save_channel(Actor.system(), AlertChannel(tenant=shop, name="shop hook", kind="webhook",
                                                           url=webhook_server.url()), send_open_alerts=True)
    assert webhook_server.requests == []


# ------------------------------------------------------------------ the form

def test_the_form_groups_the_fields_of_each_kind_and_keeps_only_the_chosen_ones(staff, open_and_closed_alerts):
    page = text(staff.get(reverse("dashboard:channel_new")))
    email_group = page.split('data-channel-kind="email"')[1].split("</fieldset>")[0]
    webhook_group = page.split('data-channel-kind="webhook"')[1].split("</fieldset>")[0]
    assert 'name="emails"' in email_group and 'name="url"' not in email_group
    assert 'name="url"' in webhook_group and 'name="secret"' in webhook_group and 'name="emails"' not in webhook_group
    assert "channel_form.js" in page
    assert 'name="send_open_alerts"' in page and "2 alerts open now" in page

    response = staff.post(reverse("dashboard:channel_new"), {
        "tenant": "", "name": "mail", "kind": "email", "emails": "oncall@example.test",
        "url": "https://left-over.example.com/", "secret": "leftover", "enabled": "on"})
    assert response.status_code == 302
    channel = AlertChannel.objects.get(name="mail")
    assert (channel.emails, channel.url, channel.secret) == (["oncall@example.test"], "", "")
    # editing an existing channel offers no backlog (it only ever goes to a new channel)
    assert 'name="send_open_alerts"' not in text(staff.get(reverse("dashboard:channel_edit", args=[channel.pk])))
