"""Check rounds against real loopback upstreams that go down and come back."""
from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

from controlplane.health import rounds
from controlplane.health.models import HealthTransition, PoolCheckState, TargetHealth
from controlplane.health.status import current_health, health_generation, health_snapshot
from controlplane.health.tasks import check_pool
from controlplane.proxy.models import Pool, Target
from controlplane.publishing import notify
from controlplane.tenancy.models import Tenant

pytestmark = pytest.mark.django_db


def make_pool(*ports, name="web", up=2, down=3, timeout=0.5, tenant=None, **fields):
    fields.setdefault("health_check_type", "http")  # the checks here read statuses (new pools default to tcp)
    pool = Pool.objects.create(name=name, tenant=tenant, health_check_enabled=True,
                               health_check_interval=5, health_check_timeout=timeout,
                               healthy_threshold=up, unhealthy_threshold=down, **fields)
    for port in ports:
        Target.objects.create(pool=pool, host="127.0.0.1", port=port)
    return pool


class Group:
    """A member of the data-plane group on the in-memory channel layer."""

    def __init__(self):
        self.layer = get_channel_layer()
        self.channel = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(notify.DATAPLANE_GROUP, self.channel)

    def messages(self):
        async def drain():
            out = []
            while True:
                try:
                    out.append(await asyncio.wait_for(self.layer.receive(self.channel), 0.05))
                except asyncio.TimeoutError:
                    return out
        return async_to_sync(drain)()

    def close(self):
        async_to_sync(self.layer.group_discard)(notify.DATAPLANE_GROUP, self.channel)


@pytest.fixture
def group():
    g = Group()
    yield g
    g.close()


def test_it_marks_a_target_unhealthy_only_after_the_threshold(upstreams, group,
                                                              django_capture_on_commit_callbacks):
    bad, good = upstreams.add(200), upstreams.add(200)
    pool = make_pool(bad.port, good.port, down=3)
    target = Target.objects.get(port=bad.port)
    check_pool(pool.id)  # the first result decides an unknown target: up
    bad.status = 503
    before = health_generation()
    for round_no in (1, 2):
        with django_capture_on_commit_callbacks(execute=True):
            result = check_pool(pool.id)
        assert result["status"] == "done" and result["checked"] == 2 and result["failed"] == 1
        target.refresh_from_db()
        assert target.healthy, f"unhealthy after {round_no} failure(s)"
        assert TargetHealth.objects.get(target=target).consecutive_fail == round_no
    assert group.messages() == []

    with django_capture_on_commit_callbacks(execute=True):
        result = check_pool(pool.id)
    assert result["transitions"] == {str(target.id): False}
    target.refresh_from_db()
    assert not target.healthy and target.health_reason == "status 503 received"
    assert target.health_changed is not None
    tr = HealthTransition.objects.get(target=target)
    assert (tr.healthy, tr.reason, tr.status, tr.target_address) == \
        (False, "status 503 received", 503, f"127.0.0.1:{bad.port}")
    assert group.messages() == [{"type": notify.HEALTH_CHANGED, "targets": {str(target.id): False}}]
    assert health_generation() == before + 1
    assert current_health() == {target.id: False, Target.objects.get(port=good.port).id: True}
    h = TargetHealth.objects.get(target=target)
    assert (h.last_ok, h.last_status, h.last_reason) == (False, 503, "status 503 received")


def test_it_brings_a_target_back_after_the_healthy_threshold(upstreams, group,
                                                             django_capture_on_commit_callbacks):
    u = upstreams.add(200)
    pool = make_pool(u.port, up=2, down=2)
    target = Target.objects.get()
    u.stop()
    with django_capture_on_commit_callbacks(execute=True):
        check_pool(pool.id)
        check_pool(pool.id)
    target.refresh_from_db()
    assert not target.healthy and target.health_reason == "connection refused"

    u.start()
    with django_capture_on_commit_callbacks(execute=True):
        check_pool(pool.id)
    target.refresh_from_db()
    assert not target.healthy  # one success is not enough
    with django_capture_on_commit_callbacks(execute=True):
        check_pool(pool.id)
    target.refresh_from_db()
    assert target.healthy and target.health_reason == "status 200 received"
    assert list(HealthTransition.objects.filter(target=target).order_by("id")
                .values_list("healthy", "reason")) == [(False, "connection refused"),
                                                       (True, "status 200 received")]
    assert group.messages() == [
        {"type": notify.HEALTH_CHANGED, "targets": {str(target.id): False}},
        {"type": notify.HEALTH_CHANGED, "targets": {str(target.id): True}},
    ]


def test_it_announces_a_transition_only_when_the_transaction_commits(upstreams, group,
                                                                     django_capture_on_commit_callbacks):
    u = upstreams.add(500)
    pool = make_pool(u.port, down=1)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        check_pool(pool.id)
    assert group.messages() == []  # not committed yet: nothing sent
    assert len(callbacks) == 1
    callbacks[0]()
    assert group.messages() == [{"type": notify.HEALTH_CHANGED,
                                 "targets": {str(Target.objects.get().id): False}}]


def test_it_records_timeouts_with_their_reason(upstreams):
    u = upstreams.add(200)
    u.hang = True
    pool = make_pool(u.port, down=1, timeout=0.3)
    check_pool(pool.id)
    target = Target.objects.get()
    assert not target.healthy and target.health_reason == "timeout after 0.3s"


def test_it_runs_tcp_checks(upstreams):
    u = upstreams.add(500)  # a TCP check does not care about HTTP
    pool = make_pool(u.port, down=1, health_check_type="tcp")
    assert check_pool(pool.id)["failed"] == 0
    u.stop()
    check_pool(pool.id)
    assert Target.objects.get().health_reason == "connection refused"


def test_it_calls_the_alert_hook_once_per_transition(upstreams, monkeypatch):
    from controlplane.alerts import hooks

    calls = []
    monkeypatch.setattr(hooks, "target_transition",
                        lambda target, healthy, reason: calls.append((target.pk, healthy, reason)),
                        raising=False)
    u = upstreams.add(200)
    pool = make_pool(u.port, down=2)
    check_pool(pool.id)  # first result: up, which it already counted as (no transition)
    u.status = 503
    check_pool(pool.id)
    assert calls == []
    check_pool(pool.id)
    check_pool(pool.id)
    assert calls == [(Target.objects.get().pk, False, "status 503 received")]


def test_it_keeps_the_transition_when_the_alert_hook_fails(upstreams, monkeypatch):
    from controlplane.alerts import hooks

    def broken(*args):
        raise RuntimeError("smtp down")

    monkeypatch.setattr(hooks, "target_transition", broken, raising=False)
    u = upstreams.add(503)
    pool = make_pool(u.port, down=1)
    assert check_pool(pool.id)["status"] == "done"
    assert not Target.objects.get().healthy


def test_it_does_not_check_disabled_targets(upstreams):
    u = upstreams.add(200)
    pool = make_pool(u.port, down=1)
    Target.objects.update(state=Target.DISABLED)
    assert check_pool(pool.id)["checked"] == 0
    assert u.requests == []


def test_it_does_nothing_for_a_pool_without_an_active_check(upstreams):
    u = upstreams.add(503)
    pool = make_pool(u.port, down=1)
    Pool.objects.filter(pk=pool.pk).update(health_check_enabled=False)
    assert check_pool(pool.id)["status"] == "disabled"
    assert check_pool(999999)["status"] == "missing"
    assert u.requests == []


def test_it_restarts_the_counters_when_a_target_changes_address(upstreams):
    a, b = upstreams.add(200), upstreams.add(503)
    pool = make_pool(a.port, down=3)
    check_pool(pool.id)
    a.status = 503
    check_pool(pool.id)
    check_pool(pool.id)
    Target.objects.update(port=b.port)
    check_pool(pool.id)
    h = TargetHealth.objects.get()
    assert h.consecutive_fail == 1 and h.checked_port == b.port
    assert Target.objects.get().healthy


def test_it_applies_the_upstream_policy_to_tenant_pools(upstreams):
    u = upstreams.add(200)
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    pool = make_pool(u.port, down=1, tenant=tenant)
    check_pool(pool.id)
    target = Target.objects.get()
    assert not target.healthy
    assert target.health_reason.startswith("address not allowed by the upstream policy")
    assert u.requests == []
    tenant.allowed_networks = ["127.0.0.0/8"]
    tenant.save()
    Pool.objects.filter(pk=pool.pk).update(healthy_threshold=1)
    check_pool(pool.id)
    assert Target.objects.get().healthy


def test_it_marks_targets_healthy_when_the_check_is_disabled(upstreams, group,
                                                             django_capture_on_commit_callbacks):
    u = upstreams.add(503)
    pool = make_pool(u.port, down=1)
    check_pool(pool.id)
    target = Target.objects.get()
    assert not Target.objects.get().healthy
    group.messages()
    with django_capture_on_commit_callbacks(execute=True):
        pool.health_check_enabled = False
        pool.save()
    target.refresh_from_db()
    assert target.healthy and target.health_reason == "active health check disabled"
    assert HealthTransition.objects.filter(target=target, healthy=True).count() == 1
    assert TargetHealth.objects.get().consecutive_fail == 0
    assert group.messages() == [{"type": notify.HEALTH_CHANGED, "targets": {str(target.id): True}}]


def test_it_gives_a_consumer_a_generation_and_the_full_state(upstreams):
    u = upstreams.add(503)
    pool = make_pool(u.port, down=1)
    gen0, state0 = health_snapshot()
    check_pool(pool.id)
    gen1, state1 = health_snapshot()
    tid = Target.objects.get().id
    assert gen1 == gen0 + 1 and state0 == {tid: True} and state1 == {tid: False}
    assert health_snapshot(pool_ids=[pool.id + 1]) == (gen1, {})


# ---------------------------------------------------------------- overlap

def test_it_skips_a_round_while_the_previous_one_is_running(upstreams, monkeypatch, caplog):
    u = upstreams.add(503)
    pool = make_pool(u.port, down=1)
    inner = []
    real_run_async = rounds.run_async

    def overlapping(coro):
        # A second round of the same pool starts while the first one is probing.
        inner.append(check_pool(pool.id))
        return real_run_async(coro)

    monkeypatch.setattr(rounds, "run_async", overlapping)
    with caplog.at_level(logging.WARNING, logger="switchyard.health"):
        outer = check_pool(pool.id)
    assert inner[0]["status"] == "skipped" and outer["status"] == "done"
    assert len(u.requests) == 1  # the skipped round probed nothing
    state = PoolCheckState.objects.get(pool=pool)
    assert (state.rounds, state.rounds_skipped) == (1, 1)
    assert state.running_until is None and state.last_skipped is not None
    assert f"health: round skipped for pool {pool.id}: the previous round is still running" \
        in caplog.messages


def test_it_takes_over_a_lease_that_expired(upstreams):
    u = upstreams.add(200)
    pool = make_pool(u.port)
    PoolCheckState.objects.create(pool=pool, running_until=timezone.now() - timedelta(seconds=1),
                                  round_token="dead-worker")
    assert check_pool(pool.id)["status"] == "done"
    PoolCheckState.objects.filter(pool=pool).update(
        running_until=timezone.now() + timedelta(seconds=60), round_token="alive")
    assert check_pool(pool.id)["status"] == "skipped"


def test_it_drops_the_results_of_a_round_that_lost_its_lease(upstreams):
    u = upstreams.add(503)
    pool = make_pool(u.port, down=1)
    targets = list(Target.objects.all())
    slow = rounds.acquire_round(pool.id, lease=0)  # expires at once
    fast = rounds.acquire_round(pool.id, lease=60)  # another worker takes over
    assert slow and fast and slow != fast
    from controlplane.health.checker import CheckResult
    stale = rounds.record_round(pool.id, slow, targets, [CheckResult(False, "status 503 received", 503)], 0)
    assert stale.status == "stale"
    assert Target.objects.get().healthy and not TargetHealth.objects.exists()
    assert PoolCheckState.objects.get(pool=pool).round_token == fast


# ---------------------------------------------------------------- through Celery

def test_it_runs_check_pool_through_celery_eagerly(upstreams, settings):
    from controlplane.celery import app

    u = upstreams.add(503)
    pool = make_pool(u.port, down=1)
    app.conf.task_always_eager = True
    try:
        result = check_pool.delay(pool.id).get()
    finally:
        app.conf.task_always_eager = False
    assert result["transitions"] == {str(Target.objects.get().id): False}
    assert "controlplane.health.tasks.check_pool" in app.tasks


def test_it_raises_a_target_down_alert_through_the_real_hook(upstreams):
    from controlplane.alerts import hooks
    from controlplane.alerts.models import Alert

    if not hasattr(hooks, "target_transition"):
        pytest.skip("controlplane.alerts.hooks.target_transition is not there yet")
    u = upstreams.add(503)
    pool = make_pool(u.port, down=1)
    check_pool(pool.id)
    alert = Alert.objects.get(kind="target_down")
    assert f"127.0.0.1:{u.port}" in alert.subject and "status 503 received" in alert.subject


def test_it_decides_a_never_checked_target_by_its_first_result(upstreams, group,
                                                               django_capture_on_commit_callbacks):
    """Issue 15: a target nobody has checked is unknown, so its first check decides at once
    (a closed port shows down after one round, not after unhealthy_threshold rounds)."""
    up, closed = upstreams.add(200), upstreams.add(200)
    closed.stop()
    pool = make_pool(up.port, closed.port, down=3, health_check_type="tcp")
    with django_capture_on_commit_callbacks(execute=True):
        result = check_pool(pool.id)
    dead = Target.objects.get(port=closed.port)
    assert result["transitions"] == {str(dead.id): False}
    assert not dead.healthy and dead.health_reason == "connection refused"
    assert Target.objects.get(port=up.port).healthy
    assert HealthTransition.objects.get().target_id == dead.id
    assert all(h.first_checked is not None for h in TargetHealth.objects.all())
    assert group.messages() == [{"type": notify.HEALTH_CHANGED, "targets": {str(dead.id): False}}]
    # From then on the thresholds apply: one passing check is not enough to come back.
    closed.start()
    check_pool(pool.id)
    assert not Target.objects.get(port=closed.port).healthy
