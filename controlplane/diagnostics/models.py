"""What diagnostics store: the node process facts a hello brings, and captured requests.

Captures are short-lived troubleshooting data: every row has an ``expires`` and is
deleted by ``services.purge_expired`` (called on every capture write and read).
"""
import uuid

from django.db import models


class NodeRuntime(models.Model):
    """Facts about the running node process, from its last hello."""
    node = models.OneToOneField("publishing.Node", on_delete=models.CASCADE, related_name="runtime")
    started = models.DateTimeField(null=True, blank=True, help_text="When the node process started.")
    updated = models.DateTimeField(auto_now=True)


class CaptureSession(models.Model):
    """An armed request capture on one route: the next ``count`` requests, until ``expires``."""
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    route = models.ForeignKey("proxy.Route", on_delete=models.CASCADE, related_name="+")
    tenant = models.ForeignKey("tenancy.Tenant", null=True, blank=True, on_delete=models.CASCADE,
                               related_name="+")
    node = models.ForeignKey("publishing.Node", null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+", help_text="Only this node (empty: every node).")
    count = models.PositiveSmallIntegerField(default=1)
    synthetic = models.BooleanField(default=False)
    created_by = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField()
    stopped = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created"]


class CapturedRequest(models.Model):
    """One captured request (headers redacted on the node)."""
    session = models.ForeignKey(CaptureSession, on_delete=models.CASCADE, related_name="requests")
    route = models.ForeignKey("proxy.Route", on_delete=models.CASCADE, related_name="+")
    tenant = models.ForeignKey("tenancy.Tenant", null=True, blank=True, on_delete=models.CASCADE,
                               related_name="+")
    node = models.ForeignKey("publishing.Node", null=True, on_delete=models.SET_NULL, related_name="+")
    data = models.JSONField()
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField()

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["route", "created"], name="capture_route_created"),
                   models.Index(fields=["expires"], name="capture_expires")]
