"""Rate limits on one node (dataplane.ratelimit): the token bucket, key tables that stay
bounded, share computation and fallback, the schema's bounds, and the 429 on the wire
(in-process proxy). Across nodes: tests/e2e/test_rate_limits.py."""
import json

import pytest

from dataplane import ratelimit, schema
from tests.dataplane.helpers import Backend, Proxy, get, pool, route, snapshot


class Ex:
    """What ``Limit.admit`` reads of an exchange."""

    def __init__(self, t0, key=None, headers=()):
        self.t0 = t0
        self._key = key
        self.headers = list(headers)

    def client_key(self):
        return self._key


def limit(rate, burst, key="none", header="", share=1.0):
    return ratelimit.Limit("r:1", schema.RateLimit(rate, burst, key, header), share, now=0.0)


def test_a_bucket_admits_its_burst_then_the_rate():
    lim = limit(10.0, 5)
    admitted = sum(lim.admit(Ex(0.0)) == 0.0 for _ in range(20))
    assert admitted == 5  # the burst at once
    wait = lim.admit(Ex(0.0))
    assert wait == pytest.approx(0.1)  # one token every 1/rate seconds
    # over the next 10 s at 100 offered requests per second: the rate
    admitted = sum(lim.admit(Ex(i / 100)) == 0.0 for i in range(1, 1001))
    assert admitted == pytest.approx(100, abs=1)


def test_a_share_scales_rate_and_burst():
    lim = limit(100.0, 50, share=0.25)
    assert lim.share_rate == 25.0 and lim.share_cap == 12.5
    lim.set_share(0.001)
    assert lim.share_cap == 1.0  # always room for one request


def test_keys_are_limited_separately_by_address_or_header():
    lim = limit(1.0, 2, key="client_ip")
    a, b = (4, 1), (4, 2)
    assert [lim.admit(Ex(0.0, a)) == 0.0 for _ in range(3)] == [True, True, False]
    assert lim.admit(Ex(0.0, b)) == 0.0
    lim = limit(1.0, 1, key="header", header="X-Api-Key")
    k1 = [(b"x-api-key", b"X-Api-Key", b"one")]
    assert lim.admit(Ex(0.0, headers=k1)) == 0.0 and lim.admit(Ex(0.0, headers=k1)) > 0
    assert lim.admit(Ex(0.0, headers=[(b"x-api-key", b"X-Api-Key", b"two")])) == 0.0
    assert lim.admit(Ex(0.0)) == 0.0 and lim.admit(Ex(0.0)) > 0  # no header: one shared key


def test_the_key_table_stays_bounded_and_idle_keys_are_evicted():
    lim = limit(1.0, 1, key="client_ip")
    for i in range(ratelimit.MAX_KEYS + 5000):
        lim.admit(Ex(0.0, (4, i)))
    assert len(lim.buckets) == ratelimit.MAX_KEYS
    lim.tick(100.0, 0.2)
    for i in range(ratelimit.MAX_KEYS // ratelimit.SWEEP + 1):  # SWEEP oldest per tick: idle ones go
        lim.tick(101.0 + i, 0.2)
    assert lim.budget.used == len(lim.buckets)
    assert len(lim.buckets) < 100
    lim = limit(1.0, 1, key="header", header="k")
    lim.admit(Ex(0.0, headers=[(b"k", b"k", b"v" * 10000)]))
    assert [len(k) for k in lim.buckets] == [ratelimit.HEADER_KEY_BYTES]


def test_demand_reports_carry_only_the_hottest_keys_as_digests():
    lim = limit(5.0, 5, key="client_ip")
    for i in range(40):
        for _ in range(i + 1):
            lim.admit(Ex(0.0, (4, i)))
    demand, keys = lim.tick(0.2, 0.2)
    assert demand == pytest.approx(sum(range(1, 41)) * 0.5 / 0.2)
    assert len(keys) == schema.MAX_RATELIMIT_KEYS
    assert set(keys) == {ratelimit.key_id((4, i)) for i in range(24, 40)}
    assert all(schema.RATELIMIT_KEY.match(k) for k in keys)


def test_shares_follow_demand_with_a_floor_and_sum_to_the_limit():
    reports = {"a": {"r:1": (140.0, {})}, "b": {"r:1": (40.0, {})}, "c": {"r:1": (20.0, {})}}
    shares = {n: ratelimit.compute_shares(n, reports)["r:1"]["share"] for n in reports}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-5)
    assert shares["a"] == pytest.approx(ratelimit.FLOOR / 3 + (1 - ratelimit.FLOOR) * 0.7, abs=1e-6)
    assert shares["c"] == pytest.approx(ratelimit.FLOOR / 3 + (1 - ratelimit.FLOOR) * 0.1, abs=1e-6)
    idle = {"a": {"r:1": (0.0, {})}, "b": {"r:1": (0.0, {})}}
    assert ratelimit.compute_shares("a", idle)["r:1"]["share"] == pytest.approx(0.5)
    hot = {"a": {"r:2": (30.0, {"k1": 10.0})}, "b": {"r:2": (30.0, {"k1": 30.0})}}
    assert ratelimit.compute_shares("a", hot)["r:2"]["keys"]["k1"] == pytest.approx(ratelimit.FLOOR / 2 + (1 - ratelimit.FLOOR) * 0.25, abs=1e-6)


def test_the_node_falls_back_to_its_share_of_the_nodes_it_was_told_about():
    rl = ratelimit.RateLimits()
    by_route, _ = rl.build([schema.Route(1, "r", None, ("a.test",), 1, rate_limit=schema.RateLimit(90, 30))], [])
    rl.adopt()
    lim = by_route[1]
    rl.apply_shares({"type": schema.MSG_RATELIMIT_SHARES, "nodes": 3, "fallback": False,
                     "limits": {"r:1": {"share": 0.7}}})
    assert lim.share == 0.7 and rl.status()["mode"] == "shared"
    rl.apply_shares({"type": schema.MSG_RATELIMIT_SHARES, "nodes": 3, "fallback": True,
                     "since": 1700000000.0, "limits": {}})
    assert lim.share == pytest.approx(1 / 3) and rl.status()["store_down_since"] == 1700000000.0
    rl.apply_shares({"type": schema.MSG_RATELIMIT_SHARES, "nodes": 3, "limits": {"r:1": {"share": 0.5}}})
    rl.last_shares -= ratelimit.STALE_SECONDS + 1  # the control plane went quiet
    assert rl.report()["limits"] == {"r:1": {"demand": 0.0}}
    assert lim.share == pytest.approx(1 / 3) and rl.status()["mode"] == "fallback"
    # an unchanged limit keeps its bucket across applies; a changed one starts afresh
    again, _ = rl.build([schema.Route(1, "r", None, ("a.test",), 1, rate_limit=schema.RateLimit(90, 30))], [])
    assert again[1] is lim
    changed, _ = rl.build([schema.Route(1, "r", None, ("a.test",), 1, rate_limit=schema.RateLimit(91, 30))], [])
    assert changed[1] is not lim


@pytest.mark.parametrize("value, path", [
    ({"rate": 0, "burst": 1}, "routes[0].rate_limit.rate"),
    ({"rate": -1, "burst": 1}, "routes[0].rate_limit.rate"),
    ({"rate": 1, "burst": 0}, "routes[0].rate_limit.burst"),
    ({"rate": 1, "burst": 1, "key": "cookie"}, "routes[0].rate_limit.key"),
    ({"rate": 1, "burst": 1, "key": "header", "header": "X Bad"}, "routes[0].rate_limit.header"),
    ({"rate": 1, "burst": 1, "key": "header"}, "routes[0].rate_limit.header"),
    ("fast", "routes[0].rate_limit"),
])
def test_the_schema_bounds_rate_limits(value, path):
    snap = snapshot([pool(1, [(1, "127.0.0.1", 9)])], [route(1, ["a.test"], 1, rate_limit=value)])
    with pytest.raises(schema.SnapshotInvalid) as exc:
        schema.parse_snapshot(snap)
    assert path in [e.path for e in exc.value.errors]


def test_rate_limit_messages_are_checked_as_untrusted_input():
    ok = {"type": schema.MSG_RATELIMIT_REPORT, "limits": {"r:1": {"demand": 3.5, "keys": {"0123456789abcdef": 1}},
                                                         "t:acme": {"demand": 0}}}
    assert schema.parse_ratelimit_report(ok)["r:1"] == (3.5, {"0123456789abcdef": 1.0})
    for bad in ({"type": "ratelimit.report", "limits": {"x:1": {"demand": 1}}},
                {"type": "ratelimit.report", "limits": {"r:1": {"demand": -1}}},
                {"type": "ratelimit.report", "limits": {"r:1": {"demand": 1, "keys": {"nothex": 1}}}},
                {"type": "ratelimit.report", "limits": {"r:1": {"demand": 1, "keys": {
                    f"{i:016x}": 1 for i in range(schema.MAX_RATELIMIT_KEYS + 1)}}}}):
        with pytest.raises(schema.RateLimitMessageInvalid):
            schema.parse_ratelimit_report(bad)


async def test_the_node_answers_429_with_retry_after_and_counts_per_route_and_tenant():
    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])],
                    [route(1, ["limited.test"], 1, rate_limit={"rate": 0.01, "burst": 2, "key": "none", "header": ""}),
                     route(2, ["t1.test"], 1, tenant="acme"), route(3, ["t2.test"], 1, tenant="acme"),
                     route(4, ["free.test"], 1)])
    snap["tenant_rate_limits"] = [{"tenant": "acme", "limit": {"rate": 0.01, "burst": 3, "key": "client_ip"}}]
    proxy = await Proxy(snap).start()
    try:
        statuses = [(await get(proxy.port, host="limited.test")).status for _ in range(3)]
        assert statuses == [200, 200, 429]
        r = await get(proxy.port, host="limited.test")
        assert r.status == 429
        assert r.one("proxy-status") == 'switchyard; error=http_request_denied; details="rate limit"'
        assert 1 <= int(r.one("retry-after")) <= 100
        assert r.one("x-request-id")
        # the tenant's limit holds over its routes together
        statuses = [(await get(proxy.port, host=h)).status for h in ("t1.test", "t2.test", "t1.test", "t2.test")]
        assert statuses == [200, 200, 200, 429]
        assert all([(await get(proxy.port, host="free.test")).status == 200 for _ in range(10)])
        assert len(backend.requests) == 2 + 3 + 10
    finally:
        await proxy.close()
        await backend.close()


def test_the_429_template_is_built_once_per_retry_value():
    a, b = ratelimit.template(0.2), ratelimit.template(0.9)
    assert a is b and b"Retry-After: 1\r\n" in a.prefix and a.status == 429
    assert b"Retry-After: 3600\r\n" in ratelimit.template(1e9).prefix
    json.dumps(ratelimit.RateLimits().status())


async def test_the_tail_and_the_inspector_name_the_rate_limit():
    import time

    from dataplane.diagnostics import HUB
    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])],
                    [route(1, ["limited.test"], 1, rate_limit={"rate": 0.01, "burst": 1})])
    proxy = await Proxy(snap).start()
    try:
        HUB.command({"type": schema.MSG_TAIL_START, "id": "t", "expires": time.time() + 60,
                     "filter": {"status": [429]}})
        HUB.command({"type": schema.MSG_CAPTURE_START, "id": "c", "route": 1, "count": 2,
                     "expires": time.time() + 60})
        assert (await get(proxy.port, host="limited.test")).status == 200
        assert (await get(proxy.port, host="limited.test")).status == 429
        out = HUB.drain()
        lines = [ln for m in out if m["type"] == schema.MSG_TAIL_LINES for ln in m["lines"]]
        assert [(ln["status"], ln["proxy_status"], ln["reason"]) for ln in lines] == [
            (429, "http_request_denied", "rate limit")]
        recs = [m["record"] for m in out if m["type"] == schema.MSG_CAPTURE_RECORD]
        limited = recs[-1]
        assert limited["status"] == 429 and limited["upstream_request"] is None
        assert dict(limited["client_response"]["headers"])["Retry-After"]
        assert any("rate limit" in n for n in limited["notes"])
    finally:
        HUB.tails.clear(), HUB.captures.clear(), HUB.records.clear()
        HUB._flags()
        await proxy.close()
        await backend.close()


def test_all_keyed_limits_of_a_node_share_one_key_budget():
    rl = ratelimit.RateLimits()
    rl.budget.cap = 300
    routes = [schema.Route(i, f"r{i}", None, (f"{i}.test",), 1, rate_limit=schema.RateLimit(1, 1, "client_ip"))
              for i in range(1, 6)]
    by_route, _ = rl.build(routes, [])
    rl.adopt()
    for lim in by_route.values():
        for i in range(1000):
            lim.admit(Ex(0.0, (4, i)))
    assert sum(len(lim.buckets) for lim in by_route.values()) <= 300 + len(by_route)
    assert rl.budget.used == sum(len(lim.buckets) for lim in by_route.values())
