"""Issue 15, truthful health: what the dashboard, the API and the live counters say about a
target (``controlplane.health.summary``), from real check rounds against loopback ports
and from node reports stored by the real stats path (``schema.parse_stats`` ->
``telemetry.store.store_stats``)."""
from __future__ import annotations

import datetime as dt
import re
import time

import pytest
from django.urls import reverse
from django.utils import timezone

from controlplane.dashboard import charts
from controlplane.health import summary
from controlplane.health.tasks import check_pool
from controlplane.proxy import services
from controlplane.proxy.models import Pool, Target
from controlplane.publishing.models import Node
from controlplane.telemetry.models import TargetFailureRun
from controlplane.telemetry.store import store_stats
from dataplane import schema
from tests.support import free_port

pytestmark = pytest.mark.django_db


def new_pool(*ports, name="web", **fields):
    """A pool as a user creates it: through the service layer, with the defaults."""
    return services.create_pool(services.Actor.system(), name=name, note="test",
                                targets=[{"host": "127.0.0.1", "port": p, "weight": 1, "state": "enabled"}
                                         for p in ports], **fields)


def report(node, *runs, ejections=()):
    """A node's stats message, validated exactly as the sync consumer does, then stored."""
    msg = {"type": schema.MSG_STATS, "interval": 10, "routes": {},
           "ejections": [{"target_id": t, "until": time.time() + 30} for t in ejections],
           "failing": [{"target_id": t, "count": n, "code": code, "since": since}
                       for t, n, code, since in runs]}
    store_stats(node.pk, schema.parse_stats(msg))


def state(target) -> str:
    return summary.annotate([Target.objects.select_related("pool").get(pk=target.pk)])[0].health_state


def test_it_gives_a_new_pool_a_tcp_check_and_shows_its_targets_unknown_until_checked():
    pool = new_pool(free_port())
    assert (pool.health_check_enabled, pool.health_check_type) == (True, "tcp")
    target = pool.targets.get()
    assert target.healthy  # the nodes keep routing to it...
    assert state(target) == summary.UNKNOWN  # ...but nobody has seen it healthy
    assert summary.counts(Target.objects.all()) == {"healthy": 0, "unhealthy": 0, "unknown": 1,
                                                    "passive": 0, "total": 1}


def test_it_shows_a_closed_port_unhealthy_after_the_first_round(upstreams):
    alive = upstreams.add(200)
    pool = new_pool(alive.port, free_port())
    check_pool(pool.id)
    states = {t.port: t.health_state for t in summary.annotate(pool.targets.all(), pool)}
    assert states == {alive.port: summary.HEALTHY,
                      next(p for p in states if p != alive.port): summary.UNHEALTHY}
    closed = pool.targets.exclude(port=alive.port).get()
    assert not closed.healthy and closed.health_reason == "connection refused"
    assert summary.counts(Target.objects.all())["unhealthy"] == 1


def test_it_shows_targets_of_a_pool_without_check_unknown_and_passive_evidence_unhealthy():
    pool = new_pool(free_port(), free_port(), health_check_enabled=False)
    a, b = pool.targets.order_by("port")
    assert {state(a), state(b)} == {summary.UNKNOWN}
    node, _ = Node.register("edge-7")
    since = time.time() - 120
    report(node, (a.pk, 31, "connection_refused", since))
    assert (state(a), state(b)) == (summary.UNHEALTHY, summary.UNKNOWN)
    [evidence] = summary.passive_evidence([a.pk])[a.pk]
    assert (evidence.node, evidence.code, evidence.count) == ("edge-7", "connection_refused", 31)
    assert abs(evidence.since.timestamp() - since) < 1
    assert summary.counts(Target.objects.all()) == {"healthy": 0, "unhealthy": 1, "unknown": 1,
                                                    "passive": 1, "total": 2}
    # A report without the run (a connect succeeded) takes the evidence away.
    report(node)
    assert not TargetFailureRun.objects.exists() and state(a) == summary.UNKNOWN


def test_it_keeps_an_actively_healthy_target_healthy_but_shows_the_nodes_failures(upstreams):
    alive = upstreams.add(200)
    pool = new_pool(alive.port)
    check_pool(pool.id)
    target = pool.targets.get()
    node, _ = Node.register("edge-8")
    report(node, (target.pk, 4, "connection_timeout", time.time()))
    [t] = summary.annotate(pool.targets.all(), pool)
    assert t.health_state == summary.HEALTHY
    assert [(e.node, e.count, e.code) for e in t.passive] == [("edge-8", 4, "connection_timeout")]
    assert [t.pk for t in summary.needing_attention(Target.objects.all())] == [target.pk]


def test_it_rejects_a_malformed_failing_report():
    for bad in ([{"target_id": 1, "count": 3, "code": "Bad Code!", "since": 1.0}],
                [{"target_id": 1, "count": -1, "code": "connection_refused", "since": 1.0}],
                {"target_id": 1}):
        with pytest.raises(schema.StatsInvalid):
            schema.parse_stats({"type": schema.MSG_STATS, "routes": {}, "failing": bad})


def test_it_draws_no_health_history_before_the_pool_existed_or_before_the_first_check(upstreams):
    alive = upstreams.add(200)
    pool = new_pool(alive.port, free_port())
    Pool.objects.filter(pk=pool.pk).update(created=timezone.now() - dt.timedelta(minutes=1))
    pool.refresh_from_db()
    targets = summary.annotate(pool.targets.order_by("port"), pool)
    chart = charts.health_history(pool, targets)
    assert [s["data"] for s in chart["series"]] == [[], []]  # never checked: nothing drawn
    check_pool(pool.id)
    chart = charts.health_history(pool, summary.annotate(pool.targets.order_by("port"), pool))
    created_ms = int(pool.created.timestamp() * 1000)
    for series in chart["series"]:
        assert series["data"] and min(p["x"] for p in series["data"]) >= created_ms
        assert chart["start"] < created_ms  # the axis still spans 24 h, the line does not


def test_it_says_so_in_the_api(client, django_user_model, upstreams):
    pool = new_pool(free_port())
    user = django_user_model.objects.create_user("ops", password="x", is_staff=True, is_superuser=True)
    client.force_login(user)
    url = f"/api/v1/pools/{pool.pk}/"
    [target] = client.get(url).json()["targets"]
    assert (target["health"], target["healthy"], target["connect_failures"]) == ("unknown", True, [])
    check_pool(pool.id)
    node, _ = Node.register("edge-9")
    report(node, (pool.targets.get().pk, 5, "connection_refused", time.time()))
    [target] = client.get(url).json()["targets"]
    assert (target["health"], target["healthy"]) == ("unhealthy", False)
    assert [(f["node"], f["code"], f["count"]) for f in target["connect_failures"]] == \
        [("edge-9", "connection_refused", 5)]
    created = client.post("/api/v1/pools/", {"name": "api-pool", "targets": []}, content_type="application/json")
    assert created.status_code == 201, created.content
    assert created.json()["health_check"]["enabled"] is True and created.json()["health_check"]["type"] == "tcp"


def test_the_overview_never_claims_every_target_is_healthy_when_it_does_not_know(client, django_user_model,
                                                                                 upstreams):
    user = django_user_model.objects.create_user("ops", password="x", is_staff=True, is_superuser=True)
    client.force_login(user)
    alive = upstreams.add(200)
    pool = new_pool(alive.port)
    body = client.get(reverse("dashboard:overview")).content.decode()
    assert "Every target is healthy" not in body and "unknown" in body
    check_pool(pool.id)
    body = client.get(reverse("dashboard:overview")).content.decode()
    assert "Every target is healthy" in body  # now it knows
    node, _ = Node.register("edge-10")
    report(node, (pool.targets.get().pk, 3, "connection_refused", time.time()))
    body = client.get(reverse("dashboard:overview")).content.decode()
    assert "Every target is healthy" not in body
    assert "3 connection_refused from node edge-10" in body
    page = client.get(reverse("dashboard:pool", args=[pool.pk])).content.decode()
    assert 'data-health="healthy"' in page and "3 connection_refused from node edge-10" in page


def test_the_admin_and_the_dashboard_form_offer_the_tcp_check_for_a_new_pool(client, django_user_model):
    user = django_user_model.objects.create_user("root", password="x", is_staff=True, is_superuser=True)
    client.force_login(user)
    for url in ("/admin/proxy/pool/add/", reverse("dashboard:pool_new")):
        body = client.get(url).content.decode()
        enabled = re.search(r'<input[^>]*name="health_check_enabled"[^>]*>', body).group(0)
        assert "checked" in enabled, (url, enabled)
        assert re.search(r'<option value="tcp"[^>]*selected', body), url
