"""Alerts end to end: a real SMTP server and a real HTTP receiver, Celery eager."""
import datetime as dt
import json

import pytest
from django.db import transaction

from controlplane.alerts import hooks, services, tasks, validation
from controlplane.alerts.delivery import sign, verify_signature, webhook_payload
from controlplane.alerts.models import Alert, AlertChannel, Delivery
from controlplane.proxy.models import Pool, Target
from controlplane.publishing.models import Node
from tests.alerts.servers import WEBHOOK_SECRET

pytestmark = pytest.mark.django_db


def raise_and_deliver(capture, **kwargs):
    kwargs.setdefault("subject", "Certificate shop expires in 10 days")
    kind = kwargs.pop("kind", "certificate_expiring")
    with capture(execute=True):
        return services.raise_alert(kind, **kwargs)


def test_it_emails_an_alert_through_a_real_smtp_server(
        smtp_server, eager_celery, make_channel, django_capture_on_commit_callbacks):
    channel = make_channel("ops mail", emails=["oncall@example.test", "lead@example.test"])
    alert = raise_and_deliver(django_capture_on_commit_callbacks, body="Renew it.",
                              dedup_key="cert:1:AA:14", data={"threshold_days": 14})

    assert len(smtp_server.messages) == 1
    message = smtp_server.messages[0]
    assert sorted(message["to"]) == ["lead@example.test", "oncall@example.test"]
    assert message["subject"] == "[Switchyard] Certificate shop expires in 10 days"
    assert "Renew it." in message["body"] and "certificate_expiring" in message["body"]
    assert '"threshold_days": 14' in message["body"]
    delivery = Delivery.objects.get(alert=alert, channel=channel)
    assert (delivery.status, delivery.attempt, delivery.error) == (Delivery.SENT, 1, "")


def test_it_posts_a_signed_webhook_the_receiver_can_verify(
        webhook_server, eager_celery, make_tenant, make_channel, django_capture_on_commit_callbacks):
    shop = make_tenant("shop", allowed_networks=["127.0.0.0/8"])
    channel = make_channel("shop hook", tenant=shop, url=webhook_server.url(), secret=WEBHOOK_SECRET)
    alert = raise_and_deliver(django_capture_on_commit_callbacks, kind="target_down", tenant=shop,
                              subject="Target 10.0.0.5:80 in pool web is DOWN: timeout",
                              data={"pool": "web", "target": "10.0.0.5:80"})

    [received] = webhook_server.requests
    assert received.signature_valid, received.headers
    assert received.headers["X-Switchyard-Signature"] == sign(WEBHOOK_SECRET, received.body)
    assert received.headers["Content-Type"] == "application/json"
    payload = received.json
    assert payload["text"] == "[target_down] Target 10.0.0.5:80 in pool web is DOWN: timeout"
    assert payload["kind"] == "target_down" and payload["tenant"] == "shop"
    assert payload["data"] == {"pool": "web", "target": "10.0.0.5:80"}
    assert dt.datetime.fromisoformat(payload["created"]) == alert.created
    delivery = Delivery.objects.get(alert=alert, channel=channel)
    assert (delivery.status, delivery.response_code) == (Delivery.SENT, 200)
    # The secret is encrypted at rest and readable back only through the model.
    stored = AlertChannel.objects.get(pk=channel.pk)
    assert WEBHOOK_SECRET not in stored.secret_encrypted and stored.secret == WEBHOOK_SECRET


def test_it_retries_a_failing_webhook_with_backoff_while_email_still_delivers(
        smtp_server, webhook_server, eager_celery, retry_queue, make_channel,
        django_capture_on_commit_callbacks):
    webhook_server.statuses = [500, 503]  # then 200
    hook = make_channel("hook", url=webhook_server.url(), secret=WEBHOOK_SECRET)
    mail = make_channel("mail", emails=["oncall@example.test"])
    alert = raise_and_deliver(django_capture_on_commit_callbacks, kind="node_disconnected",
                              subject="Node edge-1 disconnected")

    # The e-mail went out at once although the webhook failed.
    assert len(smtp_server.messages) == 1
    assert Delivery.objects.get(alert=alert, channel=mail).status == Delivery.SENT
    first = Delivery.objects.get(alert=alert, channel=hook)
    assert (first.status, first.response_code, first.attempt) == (Delivery.FAILED, 500, 1)
    assert "receiver exploded" in first.error
    assert len(retry_queue.pending) == 1

    retry_queue.run_all()

    assert retry_queue.countdowns == [10, 30]
    attempts = list(Delivery.objects.filter(alert=alert, channel=hook).order_by("attempt")
                    .values_list("attempt", "status", "response_code"))
    assert attempts == [(1, "failed", 500), (2, "failed", 503), (3, "sent", 200)]
    assert len(webhook_server.requests) == 3 and all(r.signature_valid for r in webhook_server.requests)
    assert len({r.body for r in webhook_server.requests}) == 1  # the same alert each time
    assert len(smtp_server.messages) == 1  # the e-mail is not sent again


def test_it_gives_up_after_the_last_attempt(webhook_server, eager_celery, retry_queue, make_channel,
                                            django_capture_on_commit_callbacks):
    webhook_server.statuses = [500] * 10
    hook = make_channel("hook", url=webhook_server.url(), secret=WEBHOOK_SECRET)
    alert = raise_and_deliver(django_capture_on_commit_callbacks, kind="node_disconnected",
                              subject="Node edge-1 disconnected")
    retry_queue.run_all()

    assert retry_queue.countdowns == [10, 30, 90, 270]
    assert [tasks.backoff(n) for n in range(1, 5)] == [10, 30, 90, 270]
    assert Delivery.objects.filter(alert=alert, channel=hook, status=Delivery.FAILED).count() == 5
    assert len(webhook_server.requests) == 5


def test_it_delivers_a_tenant_alert_only_to_that_tenant_and_the_platform(
        webhook_server, second_webhook_server, smtp_server, eager_celery, make_tenant, make_channel,
        django_capture_on_commit_callbacks):
    shop = make_tenant("shop", allowed_networks=["127.0.0.1/32"])
    blog = make_tenant("blog", allowed_networks=["127.0.0.1/32"])
    shop_hook = make_channel("shop", tenant=shop, url=webhook_server.url("/shop"), secret=WEBHOOK_SECRET)
    blog_hook = make_channel("blog", tenant=blog, url=second_webhook_server.url("/blog"), secret=WEBHOOK_SECRET)
    platform_mail = make_channel("platform", emails=["ops@example.test"])
    make_channel("off", emails=["nobody@example.test"], enabled=False)

    shop_alert = raise_and_deliver(django_capture_on_commit_callbacks, tenant=shop, subject="shop cert")
    assert [r.json["subject"] for r in webhook_server.requests] == ["shop cert"]
    assert second_webhook_server.requests == []
    assert [m["subject"] for m in smtp_server.messages] == ["[Switchyard] shop cert"]
    assert set(Delivery.objects.filter(alert=shop_alert).values_list("channel", flat=True)) == {
        shop_hook.pk, platform_mail.pk}

    raise_and_deliver(django_capture_on_commit_callbacks, kind="node_disconnected", subject="node down")
    assert len(webhook_server.requests) == 1 and second_webhook_server.requests == []
    assert [m["subject"] for m in smtp_server.messages][-1] == "[Switchyard] node down"

    blog_alert = raise_and_deliver(django_capture_on_commit_callbacks, tenant=blog, subject="blog cert")
    assert [r.json["tenant"] for r in second_webhook_server.requests] == ["blog"]
    assert len(webhook_server.requests) == 1
    assert not Delivery.objects.filter(alert=blog_alert, channel=shop_hook).exists()
    assert set(services.channels_for(shop)) == {shop_hook, platform_mail}
    assert set(services.channels_for(None)) == {platform_mail}
    # A task queued by mistake for another tenant's channel is refused too.
    assert tasks.deliver.apply(args=(blog_alert.pk, shop_hook.pk)).get() == "refused"
    assert blog_hook.deliveries.count() == 1


def test_it_debounces_a_flapping_target(webhook_server, eager_celery, make_channel, monkeypatch, settings,
                                        django_capture_on_commit_callbacks):
    settings.SWITCHYARD_ALERT_DEBOUNCE_SECONDS = 300
    make_channel("hook", url=webhook_server.url(), secret=WEBHOOK_SECRET)
    pool = Pool.objects.create(name="web")
    target = Target.objects.create(pool=pool, host="10.0.0.5", port=8080)

    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(5):
            hooks.target_transition(target, False, "connection refused")
            hooks.target_transition(target, True, "200 OK")
    kinds = [r.json["kind"] for r in webhook_server.requests]
    assert kinds == ["target_down", "target_up"]
    assert Alert.objects.filter(kind__in=["target_down", "target_up"]).count() == 2
    assert webhook_server.requests[0].json["subject"] == \
        "Target 10.0.0.5:8080 in pool web is DOWN: connection refused"

    # Once the window has passed (the clock moves; nobody sleeps) the next transition alerts.
    later = services.clock() + dt.timedelta(seconds=301)
    monkeypatch.setattr(services, "clock", lambda: later)
    with django_capture_on_commit_callbacks(execute=True):
        assert hooks.target_transition(target, False, "timeout") is not None
        assert hooks.target_transition(target, False, "timeout") is None
    assert [r.json["kind"] for r in webhook_server.requests] == ["target_down", "target_up", "target_down"]


def test_it_sends_a_tenant_target_alert_to_the_tenant(make_tenant, make_channel, smtp_server, eager_celery,
                                                       django_capture_on_commit_callbacks):
    shop, blog = make_tenant("shop"), make_tenant("blog")
    make_channel("shop mail", tenant=shop, emails=["shop@example.test"])
    make_channel("blog mail", tenant=blog, emails=["blog@example.test"])
    target = Target.objects.create(pool=Pool.objects.create(name="web", tenant=shop), host="api.shop.test", port=443)
    with django_capture_on_commit_callbacks(execute=True):
        alert = hooks.target_transition(target, False, "TLS: certificate verify failed")
    assert alert.tenant == shop and alert.data["target_id"] == target.pk
    assert [m["to"] for m in smtp_server.messages] == [["shop@example.test"]]


def test_it_alerts_a_node_rejecting_config_once_per_version(smtp_server, eager_celery, make_channel,
                                                            django_capture_on_commit_callbacks):
    make_channel("ops", emails=["ops@example.test"])
    node, _token = Node.register("edge-1")
    errors = [{"path": "routes[0].hosts[0]", "message": "invalid host name"}]
    with django_capture_on_commit_callbacks(execute=True):
        first = hooks.node_rejected_config(node, 7, errors)
        again = hooks.node_rejected_config(node, 7, errors)
        other = hooks.node_rejected_config(node, 8, errors)
    assert first == again and other != first
    assert first.subject == "Node edge-1 rejected config v7: routes[0].hosts[0]: invalid host name"
    assert [m["subject"] for m in smtp_server.messages] == [
        "[Switchyard] Node edge-1 rejected config v7: routes[0].hosts[0]: invalid host name",
        "[Switchyard] Node edge-1 rejected config v8: routes[0].hosts[0]: invalid host name"]


def test_it_alerts_a_disconnected_node_debounced(smtp_server, eager_celery, make_channel,
                                                 django_capture_on_commit_callbacks):
    make_channel("ops", emails=["ops@example.test"])
    node, _token = Node.register("edge-2")
    with django_capture_on_commit_callbacks(execute=True):
        assert hooks.node_disconnected(node).kind == "node_disconnected"
        assert hooks.node_disconnected(node) is None
    assert [m["subject"] for m in smtp_server.messages] == ["[Switchyard] Node edge-2 disconnected"]


def test_it_queues_nothing_when_the_transaction_rolls_back(make_channel, eager_celery,
                                                           django_capture_on_commit_callbacks):
    channel = make_channel("ops", emails=["ops@example.test"])
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                services.raise_alert("acme_failed", subject="x")
                raise RuntimeError("rolled back")
    assert callbacks == [] and not Delivery.objects.filter(channel=channel).exists()


def test_it_does_not_follow_redirects(webhook_server, second_webhook_server, eager_celery, retry_queue,
                                      make_channel, django_capture_on_commit_callbacks):
    webhook_server.statuses = [(302, {"Location": second_webhook_server.url("/elsewhere")})]
    hook = make_channel("hook", url=webhook_server.url(), secret=WEBHOOK_SECRET)
    alert = raise_and_deliver(django_capture_on_commit_callbacks, kind="node_disconnected", subject="n")
    delivery = Delivery.objects.get(alert=alert, channel=hook)
    assert (delivery.status, delivery.response_code) == (Delivery.FAILED, 302)
    assert "redirects are not followed" in delivery.error
    assert second_webhook_server.requests == []


def test_it_ignores_proxy_variables_in_the_environment(webhook_server, eager_celery, make_channel, monkeypatch,
                                                       django_capture_on_commit_callbacks):
    from tests.alerts.servers import free_port
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    hook = make_channel("hook", url=webhook_server.url(), secret=WEBHOOK_SECRET)
    alert = raise_and_deliver(django_capture_on_commit_callbacks, kind="node_disconnected", subject="n")
    assert Delivery.objects.get(alert=alert, channel=hook).status == Delivery.SENT
    assert len(webhook_server.requests) == 1


def test_it_refuses_a_tenant_webhook_to_a_forbidden_address(
        webhook_server, eager_celery, retry_queue, make_tenant, make_channel, django_capture_on_commit_callbacks):
    shop = make_tenant("shop")  # no allowed networks: loopback is forbidden
    channel = AlertChannel(name="sneaky", tenant=shop, kind=AlertChannel.WEBHOOK, url=webhook_server.url())
    problems = channel.problems()
    assert "loopback" in problems["url"][0]
    for url in ("http://169.254.169.254/latest/meta-data", "http://localhost:8000/", "http://0x7f.1/",
                "http://[::ffff:127.0.0.1]/"):
        assert validation.url_problems(url, shop), url
    assert validation.url_problems(webhook_server.url(), None) == []  # the platform may use loopback

    # Stored anyway (or the name re-pointed later): delivery checks again and refuses.
    channel.save()
    alert = raise_and_deliver(django_capture_on_commit_callbacks, tenant=shop, subject="x")
    delivery = Delivery.objects.get(alert=alert, channel=channel)
    assert delivery.status == Delivery.FAILED and "upstream address policy" in delivery.error
    assert webhook_server.requests == []


@pytest.mark.parametrize("url", ["ftp://example.test/x", "file:///etc/passwd", "javascript:alert(1)",
                                 "example.test/hook", "http://user:pw@example.test/", "http://:80/"])
def test_it_accepts_only_http_and_https_webhook_urls(url):
    channel = AlertChannel(name="x", kind=AlertChannel.WEBHOOK, url=url)
    assert channel.problems().get("url")


def test_it_validates_email_channels():
    assert AlertChannel(name="m", kind="email", emails=[]).problems()["emails"]
    assert AlertChannel(name="m", kind="email", emails=["not-an-address"]).problems()["emails"]
    assert AlertChannel(name="m", kind="email", emails=["a@example.test"]).problems() == {}


def test_it_refuses_unknown_alert_kinds():
    with pytest.raises(ValueError):
        services.raise_alert("cert_expiring", subject="typo")


def test_it_sends_the_same_bytes_it_signs(db):
    alert = Alert.objects.create(kind="acme_failed", subject="s", data={"é": "ü", "n": 1})
    body = json.dumps(webhook_payload(alert), separators=(",", ":")).encode()
    assert verify_signature("k", body, sign("k", body))
    assert not verify_signature("other", body, sign("k", body))
