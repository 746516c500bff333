from django.apps import AppConfig
from django.db.models.signals import post_migrate


class TelemetryConfig(AppConfig):
    """Traffic reported by the nodes (schema.MSG_STATS), stored per minute, route and
    node for the dashboard's charts and the "why 502/504" breakdown."""
    name = "controlplane.telemetry"
    label = "telemetry"
    verbose_name = "Traffic telemetry"

    def ready(self):
        from controlplane.telemetry.tasks import ensure_schedules_after_migrate
        post_migrate.connect(ensure_schedules_after_migrate,
                             dispatch_uid="telemetry.ensure_schedules")
