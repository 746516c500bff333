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
