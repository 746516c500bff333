"""Metrics.delta_report: the per-route deltas a node reports to the control plane."""
from dataplane import schema
from dataplane.exposition import registry, render
from dataplane.metrics import BUCKETS, Metrics


def slot(seconds: float) -> int:
    return next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))


def test_it_reports_the_deltas_since_the_previous_report_and_resets():
    m = Metrics()
    api = m.route("api", 7)
    api.observe(200, "", 0.004, 0.003, bytes_in=100, bytes_out=1000)
    api.observe(502, "connection_refused", 0.02, None, bytes_in=50, bytes_out=10)
    api.observe(404, "", 0.3, 0.2)

    first = m.delta_report()
    assert set(first) == {7}
    r = first[7]
    assert r["requests"] == 3
    assert r["by_status"] == {"2xx": 1, "5xx": 1, "4xx": 1}
    assert r["by_proxy_status"] == {"connection_refused": 1}
    assert sum(r["latency_buckets"]) == 3 and len(r["latency_buckets"]) == schema.STATS_BUCKET_SLOTS
    assert r["latency_buckets"][slot(0.004)] == 1 and r["latency_buckets"][slot(0.3)] == 1
    assert sum(r["upstream_latency_buckets"]) == 2
    assert (r["bytes_in"], r["bytes_out"]) == (150, 1010)

    assert m.delta_report() == {}  # nothing new: nothing reported

    api.observe(502, "connection_refused", 0.02, None)
    api.observe(200, "", 70.0, 69.0)  # above the last bound: the overflow slot
    second = m.delta_report()[7]
    assert second["requests"] == 2
    assert second["by_status"] == {"5xx": 1, "2xx": 1}
    assert second["by_proxy_status"] == {"connection_refused": 1}
    assert second["latency_buckets"][-1] == 1 and sum(second["latency_buckets"]) == 2
    assert (second["bytes_in"], second["bytes_out"]) == (0, 0)
    # the Prometheus counters are totals and never go back
    assert sum(api.requests.values()) == 5


def test_it_keeps_same_named_routes_of_two_tenants_apart():
    m = Metrics()
    m.route("api", 1).observe(200, "", 0.01, 0.01)
    m.route("api", 2).observe(500, "", 0.01, 0.01)
    m.route("api", 2).observe(500, "", 0.01, 0.01)
    report = m.delta_report()
    assert report[1]["requests"] == 1 and report[2]["requests"] == 2
    text = render(registry(m)).decode()
    # Prometheus sees one series per route name: the two are added up.
    assert 'switchyard_request_duration_seconds_count{route="api"} 3.0' in text
    assert text.count('switchyard_request_duration_seconds_count{route="api"}') == 1


def test_it_adds_up_a_renamed_route_and_leaves_out_unrouted_traffic():
    m = Metrics()
    m.route("old", 3).observe(200, "", 0.01, None)
    m.route("new", 3).observe(200, "", 0.01, None)
    m.no_route.observe(404, "destination_not_found", 0.001, None)
    report = m.delta_report()
    assert list(report) == [3] and report[3]["requests"] == 2


def test_it_bounds_proxy_status_types_to_valid_tokens():
    m = Metrics()
    s = m.route("api", 1)
    s.observe(502, "Weird Type!", 0.01, None)
    for i in range(schema.MAX_STATS_PROXY_STATUS + 10):
        s.observe(502, f"type_{i}", 0.01, None)
    entry = m.delta_report()[1]
    assert len(entry["by_proxy_status"]) <= schema.MAX_STATS_PROXY_STATUS
    assert sum(entry["by_proxy_status"].values()) == schema.MAX_STATS_PROXY_STATUS + 11
    assert "other" in entry["by_proxy_status"]
    # what the node builds always passes the control plane's validation
    schema.parse_stats({"type": "stats", "interval": 10, "routes": {"1": entry}, "ejections": []})


async def test_it_reports_forwarded_traffic_under_the_route_id():
    """The real forwarder and applier: what a proxied request leaves in the report."""
    from tests.dataplane.helpers import Backend, Proxy, get, pool, route, snapshot

    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)]),
                     pool(2, [(2, "127.0.0.1", 1)])],  # nothing listens on port 1: refused
                    [route(42, ["app.test"], 1, name="api"), route(43, ["down.test"], 2, name="api2")])
    proxy = await Proxy(snap).start()
    try:
        assert (await get(proxy.port, host="app.test")).status == 200
        assert (await get(proxy.port, host="down.test")).status == 502
        assert (await get(proxy.port, host="nowhere.test")).status == 404
        report = proxy.state.metrics.delta_report()
    finally:
        await proxy.close()
        await backend.close()
    assert set(report) == {42, 43}  # no route, no id: not reported
    assert report[42]["requests"] == 1 and report[42]["by_status"] == {"2xx": 1}
    assert sum(report[42]["upstream_latency_buckets"]) == 1
    assert report[43]["by_status"] == {"5xx": 1}
    assert report[43]["by_proxy_status"] == {"connection_refused": 1}
