from django.apps import AppConfig
from django.db.models.signals import post_migrate


class HealthConfig(AppConfig):
    name = "controlplane.health"
    label = "health"
    verbose_name = "Health checks"

    def ready(self):
        from controlplane.health import signals

        signals.connect()
        from controlplane.health.tasks import ensure_history_schedule
        post_migrate.connect(ensure_history_schedule, dispatch_uid="health.ensure_history_schedule")
