from collections import Counter

from dataplane import balancer, schema


def make(weights, states=None):
    targets = [schema.Target(id=i, host="127.0.0.1", port=1000 + i, weight=w,
                             state=(states or {}).get(i, "enabled"))
               for i, w in enumerate(weights, 1)]
    pool = schema.Pool(id=1, name="p", tenant=None, targets=tuple(targets))
    states_ = [balancer.TargetState(t) for t in targets]
    return balancer.build(pool, states_), states_


def test_smooth_weighted_sequence_like_nginx():
    b, _ = make([5, 1, 1])
    seq = [b.pick().id for _ in range(7)]
    assert seq == [1, 1, 2, 1, 3, 1, 1]


def test_distribution_follows_weights():
    b, _ = make([3, 2, 1])
    counts = Counter(b.pick().id for _ in range(600))
    assert counts == {1: 300, 2: 200, 3: 100}


def test_unhealthy_disabled_and_zero_weight_get_no_traffic():
    b, states = make([1, 1, 1, 0], {2: "disabled"})
    states[2].healthy = False
    b.refresh()
    assert {b.pick().id for _ in range(10)} == {1}
    states[0].healthy = False
    b.refresh()
    assert b.pick() is None


def test_exclude_picks_a_different_target():
    b, states = make([1, 1])
    assert b.pick(exclude=(states[0],)).id == 2
    assert b.pick(exclude=tuple(states)) is None


# ---------------------------------------------------------------- more algorithms

from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402

from dataplane import outlier  # noqa: E402


def make_pool(weights, algorithm="round_robin", states=None, **kw):
    targets = [schema.Target(id=i, host="10.0.0.%d" % i, port=80, weight=w,
                             state=(states or {}).get(i, "enabled"))
               for i, w in enumerate(weights, 1)]
    pool = schema.Pool(id=1, name="p", tenant=None, targets=tuple(targets),
                       algorithm=algorithm, **kw)
    det = outlier.OutlierDetector()
    states_ = [balancer.TargetState(t, outlier=det.record_for(t.id)) for t in targets]
    return balancer.build(pool, states_), states_


def req(ip="192.0.2.1", headers=()):
    return SimpleNamespace(conn=SimpleNamespace(client_b=ip.encode()), set_cookie=None,
                           headers=[(k.lower().encode(), k.encode(), v.encode()) for k, v in headers])


def test_least_conn_picks_fewest_in_flight_and_round_robins_ties():
    b, ts = make_pool([1, 1, 1], "least_conn")
    assert [b.pick().id for _ in range(6)] == [1, 2, 3, 1, 2, 3]  # all idle: rotate
    ts[0].active, ts[1].active, ts[2].active = 3, 1, 2
    assert {b.pick().id for _ in range(5)} == {2}
    ts[1].active = 5
    assert b.pick().id == 3
    assert b.pick(exclude=(ts[2],)).id == 1


def test_least_conn_is_relative_to_weight():
    b, ts = make_pool([4, 1], "least_conn")
    ts[0].active, ts[1].active = 3, 1   # 3/4 < 1/1
    assert b.pick().id == 1
    ts[0].active = 5                    # 5/4 > 1/1
    assert b.pick().id == 2


def test_least_conn_large_pool_prefers_idle_targets():
    b, ts = make_pool([1] * 40, "least_conn")
    for t in ts[:-4]:
        t.active = 100
    counts = Counter(b.pick().id for _ in range(2000))
    idle = sum(counts[t.id] for t in ts[-4:])
    assert idle > 2000 * 0.15  # p2c: far above the 4/40 a blind pick would give
    assert b.pick(exclude=tuple(ts[:-1])).id == ts[-1].id


def test_random_is_weighted():
    b, ts = make_pool([3, 1], "random")
    counts = Counter(b.pick().id for _ in range(8000))
    assert 0.70 < counts[1] / 8000 < 0.80
    assert {b.pick(exclude=(ts[0],)).id for _ in range(20)} == {2}
    ts[0].healthy = ts[1].healthy = False
    b.refresh()
    assert b.pick() is None


def keys(n):
    return [req(ip=f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}") for i in range(n)]


def test_consistent_hash_is_stable_and_balanced():
    b, ts = make_pool([1] * 5, "consistent_hash")
    rs = keys(5000)
    first = [b.pick(r).id for r in rs]
    assert first == [b.pick(r).id for r in rs]  # same key, same target
    counts = Counter(first)
    assert all(600 < counts[t.id] < 1400 for t in ts), counts  # about 1000 each


def test_consistent_hash_removing_one_of_n_remaps_about_1_over_n():
    n = 10
    b, ts = make_pool([1] * n, "consistent_hash")
    rs = keys(20000)
    before = [b.pick(r).id for r in rs]
    ts[3].healthy = False
    b.refresh()
    after = [b.pick(r).id for r in rs]
    moved = sum(1 for x, y in zip(before, after) if x != y)
    # exactly the keys of the removed target move, and only those
    assert all(x == 4 for x, y in zip(before, after) if x != y)
    assert 0.5 / n < moved / len(rs) < 1.6 / n, moved
    # adding it back restores the original mapping
    ts[3].healthy = True
    b.refresh()
    assert [b.pick(r).id for r in rs] == before


def test_consistent_hash_adding_one_target_remaps_about_1_over_n_plus_1():
    n = 9
    b1, _ = make_pool([1] * n, "consistent_hash")
    b2, _ = make_pool([1] * (n + 1), "consistent_hash")  # same addresses plus 10.0.0.10
    rs = keys(20000)
    moved = [(b1.pick(r).id, b2.pick(r).id) for r in rs]
    changed = [(x, y) for x, y in moved if x != y]
    assert all(y == n + 1 for _, y in changed)  # keys only move to the new target
    assert 0.5 / (n + 1) < len(changed) / len(rs) < 1.6 / (n + 1), len(changed)


def test_consistent_hash_on_header_and_cookie_and_retry_goes_elsewhere():
    bh, ts = make_pool([1] * 4, "consistent_hash", hash_on="header", hash_key="X-User")
    picks = {bh.pick(req(ip=f"10.0.0.{i}", headers=[("X-User", "alice")])).id for i in range(50)}
    assert len(picks) == 1  # the header, not the address, decides
    users = {bh.pick(req(headers=[("X-User", f"u{i}")])).id for i in range(200)}
    assert users == {1, 2, 3, 4}
    r = req(headers=[("X-User", "alice")])
    first = bh.pick(r)
    assert bh.pick(r, exclude=(first,)) not in (first, None)
    bc, _ = make_pool([1] * 4, "consistent_hash", hash_on="cookie", hash_key="sid")
    picks = {bc.pick(req(ip=f"10.0.1.{i}", headers=[("Cookie", "a=1; sid=xyz; b=2")])).id
             for i in range(50)}
    assert len(picks) == 1


def test_sticky_cookie_sets_then_follows_and_falls_back():
    b, ts = make_pool([1, 1, 1], "round_robin", sticky_cookie="sy")
    r = req()
    t = b.pick(r)
    assert r.set_cookie.startswith(b"Set-Cookie: sy=") and b"HttpOnly" in r.set_cookie
    value = r.set_cookie.split(b"=", 1)[1].split(b";", 1)[0]
    assert len(value) == 18 and value != str(t.id).encode() and b"10.0.0" not in value  # opaque
    for _ in range(10):  # the cookie wins over round robin
        r2 = req(headers=[("Cookie", "x=1; sy=" + value.decode())])
        assert b.pick(r2) is t and r2.set_cookie is None
    for change in ("unhealthy", "ejected", "disabled", "draining"):
        b2, ts2 = make_pool([1, 1, 1], "round_robin", sticky_cookie="sy",
                            states={t.id: change} if change in ("disabled", "draining") else None)
        victim = ts2[t.id - 1]
        if change == "unhealthy":
            victim.healthy = False
        elif change == "ejected":
            victim.outlier.until = balancer.monotonic() + 30
        b2.refresh()
        r3 = req(headers=[("Cookie", "sy=" + value.decode())])
        other = b2.pick(r3)
        assert other is not None and other is not victim, change
        assert r3.set_cookie and other.sticky_id in r3.set_cookie  # re-set to the new one
    r4 = req(headers=[("Cookie", "sy=garbage")])
    assert b.pick(r4) is not None and r4.set_cookie is not None
    # a retry excludes the sticky target and re-sets the cookie
    r5 = req(headers=[("Cookie", "sy=" + value.decode())])
    other = b.pick(r5, exclude=(t,))
    assert other is not t and other.sticky_id in r5.set_cookie


def test_sticky_ids_match_across_builds():
    _, a = make_pool([1, 1], sticky_cookie="sy")
    _, b = make_pool([1, 1], sticky_cookie="sy")
    assert [t.sticky_id for t in a] == [t.sticky_id for t in b]


@pytest.mark.parametrize("algorithm", ["round_robin", "least_conn", "random", "consistent_hash"])
def test_draining_and_disabled_get_nothing_new(algorithm):
    b, ts = make_pool([1, 1, 1], algorithm, states={1: "draining", 2: "disabled"})
    assert {b.pick(req(ip=f"10.9.0.{i}")).id for i in range(50)} == {3}
    ts[2].healthy = False
    b.refresh()
    assert b.pick(req()) is None


# ---------------------------------------------------------------- outlier ejection

def runtime(n):
    b, ts = make_pool([1] * n)
    return SimpleNamespace(name="p", targets=tuple(ts), balancer=b), ts


def test_five_consecutive_failures_eject_for_30s_and_it_expires_on_pick(monkeypatch):
    det = outlier.OutlierDetector()
    pool, ts = runtime(10)
    for t in ts:
        t.outlier = det.record_for(t.id)
    for _ in range(4):
        assert not det.failure(ts[0], pool)
    det.success(ts[0])  # a success resets the run
    for _ in range(4):
        assert not det.failure(ts[0], pool)
    assert det.failure(ts[0], pool)
    assert ts[0] not in pool.balancer.live and not ts[0].live
    assert [e["target"] for e in det.current()] == [1]
    assert 29 < det.current()[0]["remaining_seconds"] <= 30
    now = balancer.monotonic()
    assert {pool.balancer.pick().id for _ in range(20)} == set(range(2, 11))
    # time passes: the first pick after the end brings the target back, no timer needed
    monkeypatch.setattr(balancer, "monotonic", lambda: now + 31)
    monkeypatch.setattr(outlier, "monotonic", lambda: now + 31)
    assert 1 in {pool.balancer.pick().id for _ in range(20)}
    assert det.current() == []
    # a second ejection lasts twice as long
    for _ in range(5):
        det.failure(ts[0], pool)
    assert det.current()[0]["remaining_seconds"] == pytest.approx(60, abs=1)
    assert det.current()[0]["ejections"] == 2


def test_ejection_limits_ten_percent_but_one_and_never_the_last():
    det = outlier.OutlierDetector()
    pool, ts = runtime(20)  # 10% of 20 = 2
    for t in ts:
        t.outlier = det.record_for(t.id)
    ejected = [any(det.failure(t, pool) for _ in range(5)) for t in ts[:4]]
    assert ejected == [True, True, False, False]
    small, two = runtime(2)  # 10% of 2 rounds to 0: one is still allowed
    for t in two:
        t.outlier = det.record_for(100 + t.id)
    assert any(det.failure(two[0], small) for _ in range(5))
    assert not any(det.failure(two[1], small) for _ in range(10))  # it is the last live one
    single, one = runtime(3)
    for t in one:
        t.outlier = det.record_for(200 + t.id)
    one[1].healthy = one[2].healthy = False
    single.balancer.refresh()
    assert not any(det.failure(one[0], single) for _ in range(10))
