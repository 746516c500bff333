"""Restoring a version (the diff first, in the page; a note that says what it restored;
the restore in each object's history; a changes list that says what changed) and the
numbers a user compares between pages (days left, error rates, latency, node names)."""
from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from controlplane.audit.models import AuditEntry
from controlplane.certs import expiry
from controlplane.certs.tasks import check_certificate
from controlplane.proxy import services
from controlplane.publishing import publisher
from tests.controlplane import helpers as h

pytestmark = pytest.mark.django_db


def text(response) -> str:
    return response.content.decode().replace("&#x27;", "'").replace("&quot;", '"')


# ------------------------------------------------------------------ restore

def test_restore_shows_the_diff_against_what_runs_now_before_anything_changes(world, login):
    c = login(world["users"]["staff"])
    route, pool = world["objs"]["shop"]["route"], world["objs"]["shop"]["pool"]
    good = publisher.current_version()
    services.update_route(h.ACTOR, route, path="/moved", note="move it")
    services.update_pool(h.ACTOR, pool, retries=3, note="more retries")
    live = publisher.current_version().number

    detail = text(c.get(reverse("dashboard:change", args=[good.number])))
    assert reverse("dashboard:change_restore", args=[good.number]) in detail
    assert "data-confirm" not in detail  # no native dialog: the page itself asks
    page = text(c.get(reverse("dashboard:change_restore", args=[good.number])))
    assert 'data-diff-item="route:shop/shop-api"' in page and 'data-diff-item="pool:shop/shop-pool"' in page
    assert "/moved" in page and f"Restore version {good.number} now" in page
    assert publisher.current_version().number == live  # looking changed nothing

    response = c.post(reverse("dashboard:change_rollback", args=[good.number]), {"note": "broke checkout"})
    assert response.status_code == 302
    new = publisher.current_version()
    assert new.number == live + 1 and new.rolled_back_from == good.number and new.sha256 == good.sha256
    expected_note = f"Restore of version {good.number}: {good.note} — broke checkout" if good.note else \
        f"Restore of version {good.number}: broke checkout"
    assert new.note == expected_note
    route.refresh_from_db()
    assert route.path == "/"

    # the restore is in each affected object's history, with the version it made
    for kind, obj in (("route", route), ("pool", pool)):
        entry = AuditEntry.objects.get(action="restore", object_type=kind, object_id=str(obj.pk))
        assert entry.config_version == new.number and entry.note == new.note
    for name, obj in (("dashboard:route", route), ("dashboard:pool", pool)):
        history = text(c.get(reverse(name, args=[obj.pk]))).split('id="history"')[-1]
        assert 'data-history="restore"' in history or "<td>restore</td>" in history
        assert f'href="{reverse("dashboard:change", args=[new.number])}"' in history


def test_a_version_already_live_has_nothing_to_restore(world, login):
    c = login(world["users"]["staff"])
    live = publisher.current_version().number
    assert "nothing to restore" in text(c.get(reverse("dashboard:change_restore", args=[live])))


def test_tenant_members_cannot_open_the_restore_page(world, login):
    c = login(world["users"]["shop-owner"])
    number = publisher.current_version().number
    assert c.get(reverse("dashboard:change_restore", args=[number])).status_code in (403, 404)


def test_the_changes_list_says_what_each_version_changed(world, login):
    route = world["objs"]["shop"]["route"]
    services.update_route(h.ACTOR, route, path="/v2", methods=["GET"], note="narrow it")
    number = publisher.current_version().number
    page = text(login(world["users"]["staff"]).get(reverse("dashboard:changes")))
    summary = page.split(f'data-summary="{number}"')[1].split("</ul>")[0]
    assert "route <strong>shop/shop-api</strong>: methods, path" in summary
    # a tenant sees only its own objects in the summaries
    services.update_route(h.ACTOR, world["objs"]["acme"]["route"], path="/acme-v2")
    acme_change = publisher.current_version().number
    shop_view = text(login(world["users"]["shop-viewer"]).get(reverse("dashboard:changes")))
    assert "acme" not in shop_view.split(f'data-version="{acme_change}"')[-1].split("</tr>")[0]


# ------------------------------------------------------------------ numbers

def test_days_left_is_one_function_rounded_to_the_nearest_day():
    now = timezone.now()
    assert expiry.days_left(now + dt.timedelta(days=10) - dt.timedelta(seconds=5), now) == 10
    assert expiry.days_left(now + dt.timedelta(days=9, hours=11), now) == 9
    assert expiry.days_left(now - dt.timedelta(hours=1), now) == -1
    assert expiry.remaining_text(now + dt.timedelta(days=10) - dt.timedelta(seconds=5), now) == "10 days"
    assert expiry.remaining_text(now + dt.timedelta(hours=5, minutes=3), now) == "5 hours"
    assert expiry.remaining_text(now - dt.timedelta(hours=1), now) == "expired"


def test_the_certificate_page_and_its_alert_give_the_same_days_left(world, login):
    leaf = h.ca().issue_cert("soon.example.com",
                             not_after=timezone.now().replace(microsecond=0) + dt.timedelta(days=10))
    cert = services.create_certificate(h.ACTOR, name="soon", certificate_pem=leaf.cert_chain_pems[0].bytes().decode(),
                                       private_key_pem=leaf.private_key_pem.bytes().decode())
    alert = check_certificate(cert, timezone.now())
    assert "expires in 10 days" in alert.subject and alert.data["days_left_whole"] == 10
    page = text(login(world["users"]["staff"]).get(reverse("dashboard:certificate", args=[cert.pk])))
    assert "10 days left" in page and "9 days" not in page


def test_why_page_gives_the_error_rate_in_percent_latency_in_ms_and_no_repeated_type(world, login, monkeypatch):
    from controlplane.diagnostics import services as diag
    route = world["objs"]["shop"]["route"]
    real = diag.route_errors

    def fake(p, pk, minutes=60):
        data = real(p, pk, minutes)
        data.update(requests=32, error_rate=31 / 32)
        data["errors_by_type"] = diag.explained_errors(
            {"errors_by_type": [{"type": "connection_refused", "count": 31}]}, route)
        data["latency"]["total"] = {"p50": 0.0123, "p95": 0.5, "p99": 1.25}
        return data
    monkeypatch.setattr(diag, "route_errors", fake)
    body = text(login(world["users"]["shop-editor"]).get(reverse("dashboard:diagnostics_why", args=[route.pk])))
    assert "5xx error rate 96.88%" in body
    assert "× 31 <span" not in body and "(connection_refused)" not in body  # said once
    assert "12.3 ms" in body and "500.0 ms" in body and "1250.0 ms" in body
    assert ">seconds<" not in body


def test_diagnostics_numbers_no_lone_step():
    from pathlib import Path
    index = (Path(__file__).resolve().parents[2] / "templates/dashboard/diagnostics/index.html").read_text()
    assert "<h2>1. " not in index


def test_a_synthetic_request_names_the_node_it_went_through(world, monkeypatch):
    from controlplane.diagnostics.services import inspector
    from controlplane.tenancy.access import Principal

    async def node_answers(node, msg, timeout):
        return {"ok": True, "node": node.name, "capture": None, "response": {"ok": True}}
    monkeypatch.setattr(inspector, "run_on_node", node_answers)
    monkeypatch.setattr(inspector, "pick_node", lambda p, ref: world["node"])
    staff = world["users"]["staff"]
    result = inspector.synthetic_request(Principal.for_user(staff), world["objs"]["shop"]["route"].pk, {})
    assert result["node"] == {"id": world["node"].pk, "name": "edge-1"}
