import hashlib
import secrets

from django.conf import settings
from django.db import models


class Tenant(models.Model):
    slug = models.SlugField(unique=True, max_length=63)
    name = models.CharField(max_length=200)
    max_routes = models.PositiveIntegerField(default=100)
    max_pools = models.PositiveIntegerField(default=50)
    max_targets = models.PositiveIntegerField(default=200)
    max_certificates = models.PositiveIntegerField(default=50)
    # Networks this tenant's upstream targets may use although the default
    # policy forbids them (e.g. "10.20.0.0/16"); one CIDR per entry.
    allowed_networks = models.JSONField(default=list, blank=True)
    # One limit over all the tenant's routes together (dataplane.schema.RateLimit as JSON).
    rate_limit = models.JSONField(
        null=True, blank=True, default=None,
        help_text='Requests per second over all the tenant\'s routes together, held across nodes: '
                  '{"rate", "burst", "key", "header"} as on a route; empty: no limit.')
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.slug


class Membership(models.Model):
    OWNER, EDITOR, VIEWER = "owner", "editor", "viewer"
    ROLES = [(OWNER, "Owner"), (EDITOR, "Editor"), (VIEWER, "Viewer")]

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=ROLES, default=VIEWER)

    class Meta:
        unique_together = [("user", "tenant")]

    def __str__(self):
        return f"{self.user} @ {self.tenant} ({self.role})"


class Delegation(models.Model):
    """A hostname suffix handed to one tenant: covers itself and every name below it."""
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="delegations")
    suffix = models.CharField(max_length=253, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    # On-demand TLS (platform staff only): a TLS handshake for a name below the suffix that a
    # route of the tenant serves and no certificate covers starts an ACME order for that name,
    # within these limits (see controlplane.acme.ondemand).
    on_demand_tls = models.BooleanField(default=False, help_text="Order a certificate for a new name below this "
                                        "suffix on its first TLS handshake.")
    on_demand_max_certificates = models.PositiveIntegerField(
        default=20, help_text="At most this many on-demand certificates (orders) below this suffix.")
    on_demand_max_per_hour = models.PositiveIntegerField(
        default=5, help_text="At most this many new on-demand orders below this suffix per hour.")

    class Meta:
        ordering = ["suffix"]

    def __str__(self):
        return f"{self.suffix} → {self.tenant}"

    def covers(self, host: str) -> bool:
        name = host[2:] if host.startswith("*.") else host
        return name == self.suffix or name.endswith("." + self.suffix)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token for the REST API, per user or per tenant (with a role)."""
    name = models.CharField(max_length=100, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="api_tokens")
    role = models.CharField(max_length=10, choices=Membership.ROLES, blank=True)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def issue(cls, user, tenant=None, role="", name=""):
        """Create a token; returns (token_row, plaintext) — the plaintext is never stored."""
        plain = "sy_" + secrets.token_urlsafe(32)
        row = cls.objects.create(user=user, tenant=tenant, role=role, name=name,
                                 token_hash=hash_token(plain), prefix=plain[:10])
        return row, plain
