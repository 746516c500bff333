"""Keep each pool's check schedule in step with the pool (connected in apps.ready)."""
from __future__ import annotations

from django.db.models.signals import post_delete, post_save

# Imported for its beat_init handler too, so beat reconciles schedules at start even
# before Celery autodiscovers the task modules.
from controlplane.health import tasks  # noqa: F401
from controlplane.health.rounds import reset_pool_health
from controlplane.health.schedules import delete_pool_schedule, sync_pool_schedule
from controlplane.proxy.models import Pool


def connect() -> None:
    post_save.connect(pool_saved, sender=Pool, dispatch_uid="switchyard.health.pool_saved")
    post_delete.connect(pool_deleted, sender=Pool, dispatch_uid="switchyard.health.pool_deleted")


def pool_saved(sender, instance, created=False, raw=False, **kwargs):
    if raw:  # loaddata: sync_schedules() reconciles later
        return
    sync_pool_schedule(instance)
    if not instance.health_check_enabled and not created:
        reset_pool_health(instance.pk)


def pool_deleted(sender, instance, **kwargs):
    delete_pool_schedule(instance.pk)
