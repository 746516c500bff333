from django.contrib import admin

from controlplane.proxy.admin_mixins import ReadOnlyAdmin

from .models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("created", "actor", "tenant", "action", "object_type", "object_repr", "config_version", "note")
    list_filter = ("action", "object_type", "tenant")
    search_fields = ("actor", "object_repr", "note")
    date_hierarchy = "created"
