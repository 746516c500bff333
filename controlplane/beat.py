"""Celery beat for Switchyard: the database scheduler, and schedules the project creates
for itself (django-celery-beat)."""
from __future__ import annotations

from django_celery_beat import schedulers

# Longest beat sleeps between looks at the schedule's change marker (one small query).
# A new schedule's first run is due one interval after it was saved; noticing the save
# within this bound keeps the first health check within two intervals of the save
# (the shortest check interval is 1 s).
CHANGE_CHECK_SECONDS = 1.0


class DatabaseScheduler(schedulers.DatabaseScheduler):
    """django-celery-beat's ``DatabaseScheduler`` that notices every change, within a second.

    Upstream reads the rows at start and only afterwards takes the change marker
    (``PeriodicTasks.last_update``) as its baseline. A change committed in between —
    typically a pool saved just as beat starts, whose open transaction beat's own
    start-up write to the marker waits for — is then older than the baseline but missing
    from the rows, and went unnoticed until the forced full reload five minutes later.
    Here the marker is read right before every read of the rows, a marker that appears
    where there was none counts as a change, and beat looks every ``CHANGE_CHECK_SECONDS``
    (upstream: 5 s) unless ``--max-interval`` says otherwise.
    """

    def __init__(self, *args, max_interval=None, **kwargs):
        super().__init__(*args, max_interval=max_interval or CHANGE_CHECK_SECONDS, **kwargs)

    def all_as_schedule(self):
        # Before the rows: anything saved after this read is newer, so the next tick reloads.
        self._last_timestamp = self.Changes.last_change()
        return super().all_as_schedule()

    def schedule_changed(self):
        had_marker = self._last_timestamp is not None
        return super().schedule_changed() or (not had_marker and self._last_timestamp is not None)


def ensure_crontab_task(name: str, task: str, crontab: dict, description: str, *,
                        using: str = "default", apps=None) -> None:
    """Create a crontab PeriodicTask when none of that name exists.

    Idempotent, and an operator's later changes to the schedule are kept. Called from
    post_migrate with ``apps``: then it does nothing until beat's tables exist.
    """
    if apps is not None:
        try:
            apps.get_model("django_celery_beat", "PeriodicTask")
            apps.get_model("django_celery_beat", "CrontabSchedule")
        except LookupError:
            return
    # The real models, so that beat's change tracking (PeriodicTasks) sees the new task.
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    if PeriodicTask._default_manager.using(using).filter(name=name).exists():
        return
    schedule, _ = CrontabSchedule._default_manager.using(using).get_or_create(
        day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC", **crontab)
    PeriodicTask._default_manager.using(using).get_or_create(
        name=name, defaults={"task": task, "crontab": schedule, "enabled": True,
                             "description": description})
