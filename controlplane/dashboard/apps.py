from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "controlplane.dashboard"
    label = "dashboard"
    verbose_name = "Dashboard"

    def ready(self):
        from . import throttle  # noqa: F401  (connects the login-throttle signal receivers)
