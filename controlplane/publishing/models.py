import secrets

from django.db import models

from controlplane.tenancy.models import hash_token


class ConfigVersion(models.Model):
    """An immutable, accepted configuration. ``snapshot`` holds no private keys."""
    number = models.PositiveIntegerField(unique=True)
    sha256 = models.CharField(max_length=64)
    snapshot = models.JSONField()
    author = models.CharField(max_length=200, blank=True)
    note = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    rolled_back_from = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-number"]
        get_latest_by = "number"

    def __str__(self):
        return f"v{self.number} {self.sha256[:12]}"


class Node(models.Model):
    name = models.CharField(max_length=100, unique=True)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    revoked = models.BooleanField(default=False)
    connected = models.BooleanField(default=False)
    applied_version = models.PositiveIntegerField(null=True, blank=True)
    applied_hash = models.CharField(max_length=64, blank=True)
    last_ack = models.DateTimeField(null=True, blank=True)
    last_apply_ms = models.FloatField(null=True, blank=True)
    # The last NACK: the version refused and the structured errors.
    rejected_version = models.PositiveIntegerField(null=True, blank=True)
    rejected_hash = models.CharField(max_length=64, blank=True)
    last_error = models.JSONField(default=list, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    connected_since = models.DateTimeField(null=True, blank=True)
    software_version = models.CharField(max_length=50, blank=True)
    workers = models.PositiveSmallIntegerField(default=1)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @classmethod
    def register(cls, name):
        """Create a node; returns (node, plaintext token). The token is shown once."""
        plain = "node_" + secrets.token_urlsafe(32)
        return cls.objects.create(name=name, token_hash=hash_token(plain)), plain


class NodeEvent(models.Model):
    """ACKs and NACKs as they arrive, for the node page."""
    ACK, NACK = "ack", "nack"
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=10)
    version = models.PositiveIntegerField(null=True)
    sha256 = models.CharField(max_length=64, blank=True)
    nonce = models.CharField(max_length=64, blank=True)
    apply_ms = models.FloatField(null=True)
    errors = models.JSONField(default=list, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]


class Quarantine(models.Model):
    """A route, pool or certificate that a node rejected in ``version``: left out of
    every next version while the object stays as it was (``object_updated``); saving
    the object again (or deleting it) lifts the quarantine."""
    ROUTE, POOL, CERTIFICATE, ACCESS_LIST = "route", "pool", "certificate", "accesslist"
    KINDS = [(k, k) for k in (ROUTE, POOL, CERTIFICATE, ACCESS_LIST)]

    kind = models.CharField(max_length=20, choices=KINDS)
    object_id = models.PositiveBigIntegerField()
    object_name = models.CharField(max_length=200)
    object_updated = models.DateTimeField(help_text="The object's ``updated`` when it was quarantined.")
    tenant = models.ForeignKey("tenancy.Tenant", null=True, blank=True, on_delete=models.CASCADE,
                               related_name="+")
    version = models.PositiveIntegerField(help_text="The version the node rejected.")
    node = models.ForeignKey(Node, null=True, on_delete=models.SET_NULL, related_name="+")
    node_name = models.CharField(max_length=100)
    errors = models.JSONField(default=list, help_text="The NACK's errors naming this object.")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["kind", "object_id", "version"],
                                               name="one_quarantine_per_object_and_version")]

    def __str__(self):
        return f"{self.kind} {self.object_name} (rejected in v{self.version})"

    @property
    def error(self) -> str:
        first = self.errors[0] if self.errors else {"path": "", "message": "no details"}
        return f"{first['path']}: {first['message']}" if first.get("path") else first.get("message", "")
