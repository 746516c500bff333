"""Health transitions are kept SWITCHYARD_HEALTH_HISTORY_DAYS, a target's newest always."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from controlplane.health import tasks
from controlplane.health.models import HealthTransition
from controlplane.proxy.models import Pool, Target

pytestmark = pytest.mark.django_db
NOW = timezone.now()


def _transition(target, days_ago, healthy=True):
    return HealthTransition.objects.create(
        target=target, pool=target.pool, target_address=f"{target.host}:{target.port}",
        healthy=healthy, reason="status 200 received", created=NOW - timedelta(days=days_ago))


def test_old_transitions_go_and_each_targets_newest_stays(settings):
    settings.SWITCHYARD_HEALTH_HISTORY_DAYS = 30
    pool = Pool.objects.create(name="web")
    busy = Target.objects.create(pool=pool, host="127.0.0.1", port=8001)
    quiet = Target.objects.create(pool=pool, host="127.0.0.1", port=8002)
    for days in (90, 45, 31, 29, 1):
        _transition(busy, days, healthy=days % 2 == 1)
    _transition(quiet, 300)
    _transition(quiet, 200, healthy=False)  # newest: the reason for its current state

    assert tasks.purge_transitions(now=NOW) == 4  # busy's 90/45/31 days, quiet's 300
    left = {(t.target_id, (NOW - t.created).days) for t in HealthTransition.objects.all()}
    assert left == {(busy.pk, 29), (busy.pk, 1), (quiet.pk, 200)}
    assert tasks.purge_transitions(now=NOW) == 0
    settings.SWITCHYARD_HEALTH_HISTORY_DAYS = 7
    assert tasks.purge_transitions(now=NOW) == 1  # the 29-day one; busy keeps its newest


def test_the_daily_schedule_exists_after_migrate_and_is_created_once():
    assert PeriodicTask.objects.filter(name=tasks.HISTORY_SCHEDULE_NAME,
                                       task=tasks.PURGE_TASK_NAME).count() == 1
    PeriodicTask.objects.filter(name=tasks.HISTORY_SCHEDULE_NAME).delete()

    class Beat:
        label = "django_celery_beat"
    tasks.ensure_history_schedule(Beat)
    tasks.ensure_history_schedule(Beat)
    assert PeriodicTask.objects.filter(name=tasks.HISTORY_SCHEDULE_NAME).count() == 1
