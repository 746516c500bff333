"""The API face of alert channels' "send test" and of the open alerts a new channel
receives: the same services as the dashboard, a real HTTP receiver on loopback."""
from __future__ import annotations

import pytest

from controlplane.alerts import services as alert_services
from controlplane.alerts.models import AlertChannel
from tests.alerts.servers import WEBHOOK_SECRET, eager_celery, webhook_server  # noqa: F401 - fixtures
from tests.controlplane import helpers as h

BASE = "/api/v1"
pytestmark = pytest.mark.django_db


def test_it_sends_a_test_through_a_channel(staff_api, webhook_server):
    r = staff_api.post(f"{BASE}/alert-channels/", {"name": "ops", "kind": "webhook", "url": webhook_server.url("/t"),
                                                   "secret": WEBHOOK_SECRET}, format="json")
    assert r.status_code == 201, r.json()
    result = staff_api.post(f"{BASE}/alert-channels/{r.json()['id']}/test/")
    assert result.status_code == 200
    assert result.json() == {"ok": True, "message": "127.0.0.1 answered 200", "response_code": 200}
    [received] = webhook_server.requests
    assert received.signature_valid and received.headers["X-Switchyard-Event"] == "test"

    webhook_server.statuses = [503]
    failed = staff_api.post(f"{BASE}/alert-channels/{r.json()['id']}/test/").json()
    assert failed["ok"] is False and failed["response_code"] == 503 and "answered 503" in failed["message"]


def test_a_viewer_may_not_send_tests(world, as_role):
    channel = alert_services.save_channel(None, AlertChannel(tenant=world["a"].tenant, name="alpha mail",
                                                             kind="email", emails=["ops@alpha.example.com"]))
    assert as_role("viewer").post(f"{BASE}/alert-channels/{channel.pk}/test/").status_code == 403


def test_send_open_alerts_on_create_delivers_the_backlog_to_the_new_channel(
        staff_api, webhook_server, eager_celery, django_capture_on_commit_callbacks):
    pool = h.pool("web")
    target = pool.targets.first()
    type(target).objects.filter(pk=target.pk).update(healthy=False)
    with django_capture_on_commit_callbacks(execute=True):
        alert_services.raise_alert("target_down", subject="web target down", dedup_key=f"target:{target.pk}:down",
                                   data={"target_id": target.pk})
    with django_capture_on_commit_callbacks(execute=True):
        r = staff_api.post(f"{BASE}/alert-channels/", {"name": "late", "kind": "webhook", "send_open_alerts": True,
                                                       "url": webhook_server.url("/late")}, format="json")
    assert r.status_code == 201, r.json()
    assert "send_open_alerts" not in r.json()  # write-only
    assert [x.json["subject"] for x in webhook_server.requests] == ["web target down"]
