from django.core.exceptions import ValidationError
from django.db import models

from controlplane.alerts.validation import email_problems, url_problems
from controlplane.crypto import decrypt, encrypt


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

    # The webhook secret is write-only and encrypted at rest.
    @property
    def secret(self) -> str:
        if not self.secret_encrypted:
            return ""
        return decrypt(self.secret_encrypted)

    @secret.setter
    def secret(self, plaintext: str) -> None:
        self.secret_encrypted = encrypt(plaintext) if plaintext else ""

    def problems(self) -> dict[str, list[str]]:
        """What is wrong with the channel's settings, by field name; empty when it is valid."""
        problems: dict[str, list[str]] = {}
        if not (self.name or "").strip():
            problems["name"] = ["This field is required."]
        if self.kind == self.EMAIL:
            found = {"emails": email_problems(self.emails)}
        elif self.kind == self.WEBHOOK:
            found = {"url": url_problems(self.url, self.tenant)}
        else:
            found = {"kind": [f"must be {self.EMAIL} or {self.WEBHOOK}"]}
        problems.update({field: messages for field, messages in found.items() if messages})
        return problems

    def clean(self):
        problems = self.problems()
        if problems:
            raise ValidationError(problems)


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
    # Set ("<kind>:<dedup_key>") for alerts that may exist only once ever, e.g. one per
    # certificate and expiry threshold; the unique index makes that hold across processes.
    once_key = models.CharField(max_length=240, null=True, blank=True, unique=True, editable=False)
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
