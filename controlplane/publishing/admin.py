import json

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.utils.html import format_html

from controlplane.audit.services import Actor, record
from controlplane.proxy.admin_mixins import ReadOnlyAdmin

from . import publisher
from .models import ConfigVersion, Node, NodeEvent, Quarantine


@admin.register(ConfigVersion)
class ConfigVersionAdmin(ReadOnlyAdmin):
    list_display = ("number", "short_hash", "author", "note", "created", "rolled_back_from")
    search_fields = ("note", "author", "sha256")
    fields = ("number", "sha256", "author", "note", "created", "rolled_back_from", "pretty_snapshot")
    readonly_fields = fields
    actions = ["rollback_to_selected"]

    @admin.display(description="sha256")
    def short_hash(self, obj):
        return obj.sha256[:12]

    @admin.display(description="snapshot")
    def pretty_snapshot(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.snapshot, indent=2, sort_keys=True))

    @admin.action(description="Roll back to the selected version")
    def rollback_to_selected(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to roll back to.", messages.ERROR)
            return
        number = queryset.get().number
        try:
            version = publisher.rollback(Actor.from_request(request), number)
        except ValidationError as exc:
            self.message_user(request, f"Rollback refused: {'; '.join(exc.messages)}", messages.ERROR)
            return
        if version is None:
            self.message_user(request, f"Version {number} is already the live configuration.")
        else:
            self.message_user(request, f"Rolled back: version {version.number} has the content of version {number}.")

    def has_change_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not request.user.is_superuser and not request.user.has_perm("publishing.add_configversion"):
            actions.pop("rollback_to_selected", None)
        return actions


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    """Nodes are registered with `manage.py registernode` (the token is shown once)."""
    list_display = ("name", "connected", "applied_version", "last_seen", "software_version", "revoked")
    list_filter = ("connected", "revoked")
    search_fields = ("name",)
    exclude = ("token_hash",)
    readonly_fields = ("name", "connected", "applied_version", "applied_hash", "last_ack", "last_apply_ms",
                       "rejected_version", "rejected_hash", "last_error", "last_error_at", "last_seen",
                       "connected_since", "software_version", "workers", "created")

    def has_add_permission(self, request):
        return False

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if "revoked" in form.changed_data:
            record(Actor.from_request(request), "revoke" if obj.revoked else "unrevoke", obj,
                   after={"revoked": obj.revoked})


@admin.register(NodeEvent)
class NodeEventAdmin(ReadOnlyAdmin):
    list_display = ("created", "node", "kind", "version", "sha256", "apply_ms")
    list_filter = ("kind", "node")


@admin.register(Quarantine)
class QuarantineAdmin(ReadOnlyAdmin):
    """Written only by the NACK handling; lifted by saving (or deleting) the object."""
    list_display = ("created", "kind", "object_name", "tenant", "version", "node_name", "error")
    list_filter = ("kind",)
    search_fields = ("object_name", "node_name")
