from django.apps import AppConfig
from django.db.models.signals import post_migrate, post_save


class CertsConfig(AppConfig):
    """Certificate checks, upload and the expiry scan. No models of its own: the
    Certificate model lives in controlplane.proxy; this app registers the Celery
    tasks and the daily scan schedule."""
    name = "controlplane.certs"
    label = "certs"

    def ready(self):
        from controlplane.certs.tasks import certificate_saved, ensure_schedules_after_migrate
        post_migrate.connect(ensure_schedules_after_migrate, dispatch_uid="certs.ensure_schedules")
        # Scan each stored certificate for expiry right away (upload, renewal, ACME).
        post_save.connect(certificate_saved, sender="proxy.Certificate", dispatch_uid="certs.scan_on_save")
