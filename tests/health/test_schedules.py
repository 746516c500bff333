"""Per-pool beat schedules follow the pools (signals) and can be reconciled."""
from __future__ import annotations

import json

import pytest
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from controlplane.health.schedules import TASK_NAME, schedule_name, sync_schedules
from controlplane.proxy.models import Pool

pytestmark = pytest.mark.django_db


def schedule(pool):
    return PeriodicTask.objects.select_related("interval").filter(name=schedule_name(pool.pk)).first()


def test_it_creates_a_schedule_for_a_pool_with_a_check():
    pool = Pool.objects.create(name="p", health_check_enabled=True, health_check_interval=5)
    task = schedule(pool)
    assert task.name == f"health-check-pool-{pool.pk}"
    assert task.task == TASK_NAME == "controlplane.health.tasks.check_pool"
    assert json.loads(task.args) == [pool.pk]
    assert (task.interval.every, task.interval.period) == (5, IntervalSchedule.SECONDS)
    assert task.enabled and task.expire_seconds == 5


def test_it_creates_no_schedule_for_a_pool_without_a_check():
    pool = Pool.objects.create(name="p", health_check_enabled=False)
    assert schedule(pool) is None


def test_it_schedules_a_tcp_check_for_a_new_pool_by_default():
    pool = Pool.objects.create(name="p")
    assert (pool.health_check_enabled, pool.health_check_type) == (True, "tcp")
    task = schedule(pool)
    assert task is not None and json.loads(task.args) == [pool.pk]


def test_it_updates_the_interval_when_the_pool_changes():
    pool = Pool.objects.create(name="p", health_check_enabled=True, health_check_interval=5)
    pool.health_check_interval = 10
    pool.save()
    task = schedule(pool)
    assert (task.interval.every, task.interval.period) == (10, IntervalSchedule.SECONDS)
    pool.health_check_interval = 2.5
    pool.save()
    task = schedule(pool)
    assert (task.interval.every, task.interval.period) == (2_500_000, IntervalSchedule.MICROSECONDS)
    assert PeriodicTask.objects.filter(name__startswith="health-check-pool-").count() == 1


def test_it_leaves_beat_alone_when_nothing_about_the_check_changed():
    pool = Pool.objects.create(name="p", health_check_enabled=True, health_check_interval=5)
    before = PeriodicTasks.last_change()
    pool.read_timeout = 30
    pool.save()
    assert PeriodicTasks.last_change() == before


def test_it_tells_beat_when_the_schedule_changed():
    pool = Pool.objects.create(name="p", health_check_enabled=True, health_check_interval=5)
    before = PeriodicTasks.last_change()
    pool.health_check_interval = 7
    pool.save()
    assert PeriodicTasks.last_change() > before


def test_it_removes_the_schedule_when_the_check_is_disabled_and_restores_it():
    pool = Pool.objects.create(name="p", health_check_enabled=True)
    pool.health_check_enabled = False
    pool.save()
    assert schedule(pool) is None
    pool.health_check_enabled = True
    pool.save()
    assert schedule(pool) is not None


def test_it_removes_the_schedule_when_the_pool_is_deleted():
    pool = Pool.objects.create(name="p", health_check_enabled=True)
    pk = pool.pk
    pool.delete()
    assert not PeriodicTask.objects.filter(name=schedule_name(pk)).exists()


def test_it_rolls_the_schedule_back_with_the_pool():
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            Pool.objects.create(name="p", health_check_enabled=True)
            raise RuntimeError("validation failed")
    assert not PeriodicTask.objects.filter(name__startswith="health-check-pool-").exists()


def test_it_reconciles_pools_written_without_signals():
    kept = Pool.objects.create(name="kept", health_check_enabled=True, health_check_interval=3)
    Pool.objects.bulk_create([Pool(name="bulk", health_check_enabled=True, health_check_interval=4)])
    bulk = Pool.objects.get(name="bulk")
    Pool.objects.filter(pk=kept.pk).update(health_check_interval=6)  # no signal
    orphan_interval = IntervalSchedule.objects.create(every=9, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="health-check-pool-424242", task=TASK_NAME, args="[424242]",
                                interval=orphan_interval)
    PeriodicTask.objects.create(name="someone-elses-task", task="x", interval=orphan_interval)

    assert sync_schedules() == {"scheduled": 2, "removed": 1}
    assert schedule(bulk).interval.every == 4
    assert schedule(kept).interval.every == 6
    assert not PeriodicTask.objects.filter(name="health-check-pool-424242").exists()
    assert PeriodicTask.objects.filter(name="someone-elses-task").exists()  # not ours
