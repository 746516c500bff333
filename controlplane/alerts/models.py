from django.db import models


class AlertChannel(models.Model):
    EMAIL, WEBHOOK = "email", "webhook"
    KINDS = [(EMAIL, "e-mail"), (WEBHOOK, "webhook")]

    tenant = models.ForeignKey("tenancy.Tenant", null=True, blank=True, on_delete=models.CASCADE,
                               related_name="alert_channels", help_text="Empty: platform-wide.")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=10, choices=KINDS)
    emails = models.JSONField(default=list, blank=True)
    url = models.URLField(blank=True)
    secret_encrypted = models.TextField(blank=True, editable=False)
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Alert(models.Model):
    KINDS = [(k, k) for k in (
        "certificate_expiring", "certificate_expired", "target_down", "target_up",
        "node_disconnected", "node_rejected_config", "acme_failed",
    )]
    tenant = models.ForeignKey("tenancy.Tenant", null=True, blank=True, on_delete=models.CASCADE,
                               related_name="alerts")
    kind = models.CharField(max_length=30, choices=KINDS)
    subject = models.CharField(max_length=300)
    body = models.TextField(blank=True)
    # Identifies what the alert is about, for once-per-threshold and debounce rules.
    dedup_key = models.CharField(max_length=200, blank=True, db_index=True)
    data = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"{self.kind}: {self.subject}"


class Delivery(models.Model):
    PENDING, SENT, FAILED = "pending", "sent", "failed"
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(AlertChannel, on_delete=models.CASCADE, related_name="deliveries")
    attempt = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=10, default=PENDING)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
