"""Invitations to a tenant: a one-time, expiring link sent by e-mail. Only the sha256
of the link's token is stored; the plaintext goes into the e-mail and is shown to the
inviting owner once."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Invitation(models.Model):
    PENDING, ACCEPTED, REVOKED, EXPIRED = "pending", "accepted", "revoked", "expired"

    tenant = models.ForeignKey("tenancy.Tenant", on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=10)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField()
    accepted = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    revoked = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return f"{self.email} → {self.tenant} ({self.role})"

    @property
    def status(self) -> str:
        if self.accepted is not None:
            return self.ACCEPTED
        if self.revoked is not None:
            return self.REVOKED
        if self.expires <= timezone.now():
            return self.EXPIRED
        return self.PENDING
