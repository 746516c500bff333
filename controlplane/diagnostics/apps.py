from django.apps import AppConfig


class DiagnosticsConfig(AppConfig):
    """Node status, live tail, probes, TLS checks, request inspector, why 502/504."""
    name = "controlplane.diagnostics"
    label = "diagnostics"
    verbose_name = "Diagnostics"
