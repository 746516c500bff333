"""Storage, percentiles, the dashboard/API queries and retention of traffic rows."""
import datetime as dt
import random

import pytest
from django.db import transaction
from django_celery_beat.models import PeriodicTask

from controlplane.publishing.models import Node
from controlplane.telemetry import proxystatus, queries, store, tasks
from controlplane.telemetry.models import TargetEjection, TrafficMinute
from dataplane import errors, schema
from dataplane.metrics import Histogram

from .helpers import histogram, route_entry, stats, world

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2030, 5, 17, 12, 30, 30, tzinfo=dt.timezone.utc)  # 30 s into the minute


def put(node, routes, now, ejections=None):
    return store.store_stats(node.pk, schema.parse_stats(stats(routes, ejections)), now=now)


@pytest.fixture
def w():
    data = world()
    data["edge1"] = Node.register("edge-1")[0]
    data["edge2"] = Node.register("edge-2")[0]
    return data


# ---------------------------------------------------------------- percentiles

def test_it_computes_percentiles_of_a_known_distribution():
    h = Histogram()
    n = 10_000
    for i in range(n):  # uniform on (0, 1 s]
        h.observe((i + 1) / n)
    assert queries.percentile(h.counts, 0.50) == pytest.approx(0.50, abs=0.002)
    assert queries.percentile(h.counts, 0.95) == pytest.approx(0.95, abs=0.002)
    assert queries.percentile(h.counts, 0.99) == pytest.approx(0.99, abs=0.002)


def test_it_lands_percentiles_in_the_bucket_of_the_true_value():
    rng = random.Random(7)
    values = sorted(rng.lognormvariate(-3.5, 1.2) for _ in range(20_000))  # median ~30 ms
    h = Histogram()
    for v in values:
        h.observe(v)
    bounds = (0.0, *schema.LATENCY_BUCKETS)
    for q in (0.5, 0.95, 0.99):
        true = values[int(q * len(values)) - 1]
        got = queries.percentile(h.counts, q)
        i = next(i for i, b in enumerate(schema.LATENCY_BUCKETS) if true <= b)
        assert bounds[i] <= got <= bounds[i + 1], (q, true, got)


def test_it_handles_empty_and_overflowing_histograms():
    assert queries.percentile([0] * schema.STATS_BUCKET_SLOTS, 0.5) is None
    assert queries.percentile(histogram(s120=4), 0.99) == schema.LATENCY_BUCKETS[-1]
    assert queries.percentile(histogram(s0_0005=10), 0.5) == pytest.approx(0.0005)


# ---------------------------------------------------------------- storing

def test_it_merges_reports_of_one_minute_and_keeps_minutes_and_nodes_apart(w):
    api = w["shop_api"].pk
    put(w["edge1"], {api: route_entry(2, {"2xx": 2})}, NOW)
    put(w["edge1"], {api: route_entry(3, {"5xx": 3}, {"connection_timeout": 3})}, NOW + dt.timedelta(seconds=10))
    put(w["edge2"], {api: route_entry(1, {"2xx": 1})}, NOW)
    put(w["edge1"], {api: route_entry(4, {"2xx": 4})}, NOW + dt.timedelta(minutes=1))
    rows = {(r.minute, r.node_id): r for r in TrafficMinute.objects.all()}
    assert len(rows) == 3
    merged = rows[(NOW.replace(second=0), w["edge1"].pk)]
    assert (merged.requests, merged.status_2xx, merged.status_5xx) == (5, 2, 3)
    assert merged.by_proxy_status == {"connection_timeout": 3}
    assert merged.latency == histogram(s0_004=5)


def test_it_merges_into_a_row_another_report_created_meanwhile(w):
    api = w["shop_api"].pk
    minute = NOW.replace(second=0)
    put(w["edge1"], {api: route_entry(2, {"2xx": 2})}, NOW)
    report = schema.parse_stats(stats({api: route_entry(1, {"4xx": 1})}))
    with transaction.atomic():  # the path taken after losing an insert race
        store._merge_one(minute, w["edge1"].pk, api, w["shop"].pk, report.routes[api])
    row = TrafficMinute.objects.get()
    assert (row.requests, row.status_2xx, row.status_4xx) == (3, 2, 1)


def test_it_keeps_the_node_history_of_a_route_when_the_node_is_deleted(w):
    put(w["edge1"], {w["demo"].pk: route_entry(1, {"2xx": 1})}, NOW)
    w["edge1"].delete()
    assert TrafficMinute.objects.get().node_id is None


# ---------------------------------------------------------------- queries

@pytest.fixture
def traffic(w):
    api, blog = w["shop_api"].pk, w["blog_api"].pk
    # two minutes ago: two nodes; now: one node; one minute ago: nothing
    put(w["edge1"], {api: route_entry(60, {"2xx": 54, "5xx": 6}, {"connection_refused": 4, "dns_error": 2},
                                      latency=histogram(s0_004=50, s0_3=10),
                                      upstream=histogram(s0_002=50, s0_2=10))}, NOW - dt.timedelta(minutes=2))
    put(w["edge2"], {api: route_entry(60, {"2xx": 60}, latency=histogram(s0_004=60),
                                      upstream=histogram(s0_002=60))}, NOW - dt.timedelta(minutes=2))
    put(w["edge1"], {api: route_entry(30, {"2xx": 27, "5xx": 3}, {"http_response_timeout": 3},
                                      bytes_in=100, bytes_out=5000),
                     blog: route_entry(999, {"5xx": 999})}, NOW)
    # outside every window below
    put(w["edge1"], {api: route_entry(7, {"2xx": 7})}, NOW - dt.timedelta(hours=2))
    return w


def test_it_returns_one_point_per_minute_scoped_to_the_given_routes(traffic):
    points = queries.traffic_series([traffic["shop_api"].pk], minutes=5, now=NOW)
    assert [p["minute"] for p in points] == [NOW.replace(second=0) - dt.timedelta(minutes=m)
                                            for m in (4, 3, 2, 1, 0)]
    assert [p["requests"] for p in points] == [0, 0, 120, 0, 30]  # blog's 999 not counted
    two_ago, now = points[2], points[4]
    assert two_ago["rps"] == 2.0 and not two_ago["partial"]
    assert two_ago["error_rate"] == 0.05
    assert two_ago["by_proxy_status"] == {"connection_refused": 4, "dns_error": 2}
    assert two_ago["p50"] < 0.005 < 0.25 < two_ago["p99"] <= 0.5
    assert two_ago["upstream_p50"] < 0.0025 and two_ago["upstream_p99"] <= 0.25
    assert now["partial"] and now["rps"] == 1.0  # 30 requests in the 30 s elapsed
    assert points[0]["p50"] is None and points[0]["error_rate"] == 0.0
    assert points[2]["ts"] == int(points[2]["minute"].timestamp() * 1000)


def test_it_accepts_a_route_queryset(traffic):
    from controlplane.proxy.models import Route
    qs = Route.objects.filter(tenant=traffic["shop"])
    by_qs = queries.traffic_series(qs, minutes=5, now=NOW)
    by_ids = queries.traffic_series([r.pk for r in qs], minutes=5, now=NOW)
    assert by_qs == by_ids


def test_it_summarises_errors_by_proxy_status_and_latency(traffic):
    s = queries.route_summary([traffic["shop_api"]], minutes=60, now=NOW)
    assert s["requests"] == 150
    assert s["by_status"]["5xx"] == 9 and s["error_rate"] == 0.06
    assert [(e["type"], e["count"], e["status"]) for e in s["errors_by_type"]] == [
        ("connection_refused", 4, 502), ("http_response_timeout", 3, 504), ("dns_error", 2, 502)]
    assert s["errors_by_type"][0]["share"] == round(4 / 150, 6)
    assert s["latency"]["p50"] < 0.005 and s["latency"]["p99"] > s["upstream_latency"]["p99"] * 0.5
    assert set(s["upstream_latency"]) == {"p50", "p95", "p99"}
    assert (s["bytes_in"], s["bytes_out"]) == (100, 5000)
    per_route = queries.route_summaries([traffic["shop_api"].pk, traffic["blog_api"].pk], 60, now=NOW)
    assert per_route[traffic["blog_api"].pk]["error_rate"] == 1.0
    assert per_route[traffic["shop_api"].pk] == s


def test_it_names_the_status_of_every_proxy_status_the_data_plane_counts(w):
    # counted under the RFC 9209 type; a refusal by policy answers 401 (basic auth), 403
    # (access list, WebSocket) or 429 (rate limit), the request errors 400, 413, 414, 421,
    # 431 or 501: neither has one status, while a 502-only type keeps its status
    api = w["shop_api"].pk
    put(w["edge1"], {api: route_entry(9, {"4xx": 9}, {"http_request_denied": 5, "http_request_error": 4,
                                                                   "connection_refused": 1})}, NOW)
    s = queries.route_summary([api], minutes=5, now=NOW)
    assert [(e["type"], e["status"]) for e in s["errors_by_type"]] == [
        ("http_request_denied", None), ("http_request_error", None), ("connection_refused", 502)]


def test_every_proxy_status_value_maps_to_its_rfc_type_and_status():
    for reason, (status, etype, _detail) in errors.ERRORS.items():
        assert (proxystatus.rfc_type(reason), proxystatus.status_of(reason)) == (etype, status)  # older rows
        assert proxystatus.rfc_type(etype) == etype
        if {s for s, t, _ in errors.ERRORS.values() if t == etype} == {status}:
            assert proxystatus.status_of(etype) == status
    # aborted after the upstream's status went out: whatever that status was
    assert proxystatus.status_of("http_response_incomplete") is None
    assert proxystatus.rfc_type("http_response_incomplete") == "http_response_incomplete"


def test_it_gives_an_overview_of_the_last_minutes(traffic):
    o = queries.overview([traffic["shop_api"].pk], minutes=5, now=NOW)
    assert o["requests"] == 150
    assert o["rps"] == round(150 / (4 * 60 + 30), 3)
    assert o["error_rate"] == 0.06
    assert o["p50"] is not None and o["p95"] >= o["p50"] and o["p99"] >= o["p95"]
    empty = queries.overview([], minutes=5, now=NOW)
    assert empty["requests"] == 0 and empty["rps"] == 0.0 and empty["p99"] is None


def test_it_lists_current_ejections_scoped_to_targets(w):
    target = w["target"]
    until = (NOW + dt.timedelta(seconds=30)).timestamp()
    put(w["edge1"], {}, NOW, ejections=[{"target_id": target.pk, "until": until}])
    got = queries.ejections([target.pk], now=NOW)
    assert [(e["node"], e["target_id"]) for e in got] == [("edge-1", target.pk)]
    assert queries.ejections([], now=NOW) == []
    assert queries.ejections(now=NOW + dt.timedelta(minutes=1)) == []


# ---------------------------------------------------------------- retention

def test_it_deletes_rows_older_than_the_retention(w, settings):
    settings.SWITCHYARD_TRAFFIC_RETENTION_HOURS = 48
    demo = w["demo"].pk
    for hours in (72, 49, 47, 1):
        put(w["edge1"], {demo: route_entry(1, {"2xx": 1})}, NOW - dt.timedelta(hours=hours))
    TargetEjection.objects.create(node=w["edge1"], target=w["target"], until=NOW - dt.timedelta(minutes=1),
                                  reported=NOW - dt.timedelta(minutes=2))
    assert tasks.purge_traffic(now=NOW) == 2
    left = sorted((NOW - m).total_seconds() // 3600 for m in TrafficMinute.objects.values_list("minute", flat=True))
    assert left == [1, 47]
    assert not TargetEjection.objects.exists()
    settings.SWITCHYARD_TRAFFIC_RETENTION_HOURS = 2
    assert tasks.purge_traffic(now=NOW) == 1


def test_it_registers_the_retention_schedule_once():
    PeriodicTask.objects.filter(name=tasks.SCHEDULE_NAME).delete()
    tasks.ensure_schedules()
    tasks.ensure_schedules()
    task = PeriodicTask.objects.get(name=tasks.SCHEDULE_NAME)
    assert task.task == tasks.TASK_NAME and task.crontab is not None
