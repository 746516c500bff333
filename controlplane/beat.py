"""Beat schedules that the project creates for itself (django-celery-beat)."""
from __future__ import annotations


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
