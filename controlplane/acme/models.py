from django.db import models


class Account(models.Model):
    """The ACME account of one directory: created once, its key encrypted at rest."""
    directory = models.CharField(max_length=500, unique=True)
    key_encrypted = models.TextField(editable=False)
    uri = models.CharField(max_length=500, blank=True, help_text="The account URL the CA gave.")
    email = models.CharField(max_length=254, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.uri or self.directory


class Order(models.Model):
    """The certificate of one route that asks for one: what was last asked of the CA and
    how it went. ``pending`` (waiting for a worker or being worked on), ``valid``
    (issued and attached; ``renew_at`` says when it is renewed) or ``failed`` (the CA's
    error; tried again at ``next_retry``)."""
    PENDING, VALID, FAILED = "pending", "valid", "failed"
    STATES = [(s, s) for s in (PENDING, VALID, FAILED)]

    route = models.OneToOneField("proxy.Route", on_delete=models.CASCADE, related_name="acme_order",
                                 null=True, blank=True, help_text="The route that asks; empty for an on-demand order.")
    # On-demand orders (controlplane.acme.ondemand): one name, below an on-demand delegation,
    # served by ``via_route`` (whose challenge and profile it uses); the certificate is the tenant's.
    on_demand = models.BooleanField(default=False)
    delegation = models.ForeignKey("tenancy.Delegation", null=True, blank=True, on_delete=models.CASCADE,
                                   related_name="on_demand_orders")
    via_route = models.ForeignKey("proxy.Route", null=True, blank=True, on_delete=models.CASCADE,
                                  related_name="on_demand_orders")
    host = models.CharField(max_length=253, blank=True, db_index=True, help_text="The on-demand order's name.")
    requested = models.DateTimeField(null=True, blank=True, help_text="When the on-demand order was made.")
    names = models.JSONField(default=list)
    challenge = models.CharField(max_length=12, blank=True, help_text="The challenge the route asked for last.")
    profile = models.CharField(max_length=64, blank=True, help_text="The profile the route asked for last.")
    state = models.CharField(max_length=10, choices=STATES, default=PENDING)
    error = models.TextField(blank=True)
    failures = models.PositiveIntegerField(default=0, help_text="Failed attempts in a row.")
    next_retry = models.DateTimeField(null=True, blank=True)
    started = models.DateTimeField(null=True, blank=True, help_text="When a worker took the current attempt.")
    certificate = models.ForeignKey("proxy.Certificate", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    renew_at = models.DateTimeField(null=True, blank=True)
    ari_next_check = models.DateTimeField(null=True, blank=True)
    ari_explanation = models.CharField(max_length=500, blank=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{', '.join(self.names)} ({self.state})"


class NameClaim(models.Model):
    """A name being ordered right now: one order per name at a time, whichever worker."""
    name = models.CharField(max_length=253, unique=True)
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="claims")
    claimed = models.DateTimeField()


class Challenge(models.Model):
    """A pending HTTP-01 or TLS-ALPN-01 challenge: every node answers it until the order
    ends. A TLS-ALPN-01 challenge carries its throwaway validation certificate and key
    (good for nothing but that handshake); the key is encrypted at rest and, like a
    certificate's, kept out of the stored snapshots (filled in just before a push)."""
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="challenges")
    method = models.CharField(max_length=12, default="http-01")
    host = models.CharField(max_length=253)
    token = models.CharField(max_length=256, unique=True)
    key_authorization = models.CharField(max_length=512)
    certificate_pem = models.TextField(blank=True)
    private_key_encrypted = models.TextField(blank=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]


class OnDemandRefusal(models.Model):
    """A name reported by a node that on-demand issuance did not order, and why: the last
    few per delegation are kept (``ondemand.KEEP_REFUSALS``), one row per name."""
    delegation = models.ForeignKey("tenancy.Delegation", on_delete=models.CASCADE, related_name="on_demand_refusals")
    name = models.CharField(max_length=253)
    reason = models.CharField(max_length=300)
    count = models.PositiveIntegerField(default=1)
    last = models.DateTimeField()

    class Meta:
        ordering = ["-last", "-id"]
        constraints = [models.UniqueConstraint(fields=["delegation", "name"], name="acme_ondemand_refusal_name")]

    def __str__(self):
        return f"{self.name}: {self.reason}"
