from django.apps import AppConfig


class HealthConfig(AppConfig):
    name = "controlplane.health"
    label = "health"
    verbose_name = "Health checks"

    def ready(self):
        from controlplane.health import signals

        signals.connect()
