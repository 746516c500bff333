from django.apps import AppConfig
from django.db.models.signals import post_migrate, post_save, pre_delete


class AcmeConfig(AppConfig):
    """Automatic certificates: the ACME account, one order per route that asks for one,
    its challenges (published to the nodes with the config) and renewal."""
    name = "controlplane.acme"
    label = "acme"

    def ready(self):
        from controlplane.acme import services, signals, tasks
        from controlplane.publishing import compiler
        compiler.SECTIONS["acme_challenges"] = services.challenges_section
        if services.fill_challenge_keys not in compiler.MATERIALIZERS:
            compiler.MATERIALIZERS.append(services.fill_challenge_keys)
        from controlplane.publishing import sni
        if tasks.report_unknown_sni not in sni.HANDLERS:
            sni.HANDLERS.append(tasks.report_unknown_sni)
        post_save.connect(signals.route_saved, sender="proxy.Route", dispatch_uid="acme.route_saved")
        pre_delete.connect(signals.certificate_deleted, sender="proxy.Certificate",
                           dispatch_uid="acme.certificate_deleted")
        post_migrate.connect(tasks.ensure_schedules_after_migrate, dispatch_uid="acme.ensure_schedules")
