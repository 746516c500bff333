from django.apps import AppConfig


class ConfigioConfig(AppConfig):
    """Configuration as code: export, declarative apply with a dry-run diff, backup and restore."""
    name = "controlplane.configio"
    label = "configio"
