from django.db import models


class AuditEntry(models.Model):
    actor = models.CharField(max_length=200, help_text="Username, or token:<prefix>, or system.")
    tenant = models.ForeignKey("tenancy.Tenant", null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+")
    object_type = models.CharField(max_length=50)
    object_id = models.CharField(max_length=50, blank=True)
    object_repr = models.CharField(max_length=300, blank=True)
    action = models.CharField(max_length=20)  # create, update, delete, rollback, revoke ...
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    note = models.TextField(blank=True)
    source_address = models.GenericIPAddressField(null=True, blank=True)
    config_version = models.PositiveIntegerField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "audit entries"

    def __str__(self):
        return f"{self.created:%Y-%m-%d %H:%M} {self.actor} {self.action} {self.object_type} {self.object_repr}"
