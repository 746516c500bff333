"""State of the active health checks. State, not configuration:
none of this is part of a config version.

``Target.healthy``, ``health_changed`` and ``health_reason`` (in ``proxy``) hold the
decided health; the rows here hold what the checks need to continue in any worker
(consecutive counters, the per-pool round lock) and what the dashboard shows
(last result, transition history, skipped rounds).
"""
from django.db import models


class TargetHealth(models.Model):
    """Consecutive-result counters and the last check result of one target."""
    target = models.OneToOneField("proxy.Target", on_delete=models.CASCADE, primary_key=True,
                                  related_name="check_state")
    consecutive_ok = models.PositiveIntegerField(default=0)
    consecutive_fail = models.PositiveIntegerField(default=0)
    # The address the counters were collected for: a changed address starts over.
    checked_host = models.CharField(max_length=253, blank=True)
    checked_port = models.PositiveIntegerField(null=True, blank=True)
    last_checked = models.DateTimeField(null=True, blank=True)
    # When the target's health stopped being unknown (its first check result).
    first_checked = models.DateTimeField(null=True, blank=True)
    last_ok = models.BooleanField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_reason = models.CharField(max_length=300, blank=True)
    last_elapsed_ms = models.FloatField(null=True, blank=True)

    def __str__(self):
        return f"health of target {self.target_id}"


class HealthTransition(models.Model):
    """One change of a target's health, with the reason the checks saw."""
    target = models.ForeignKey("proxy.Target", on_delete=models.CASCADE, related_name="health_transitions")
    pool = models.ForeignKey("proxy.Pool", on_delete=models.CASCADE, related_name="health_transitions")
    target_address = models.CharField(max_length=300, help_text="host:port at the time.")
    healthy = models.BooleanField()
    reason = models.CharField(max_length=300)
    status = models.PositiveSmallIntegerField(null=True, blank=True)
    created = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["target", "-created"], name="health_tr_target_created")]

    def __str__(self):
        return f"{self.target_address} {'up' if self.healthy else 'down'}: {self.reason}"


class PoolCheckState(models.Model):
    """Per-pool round lock and round statistics.

    ``running_until`` is the lease of the round in progress: a round starts only by
    atomically moving it from empty/past to the future (one UPDATE), so overlapping
    runs of the same pool, in any worker, never pile up; they are skipped and counted.
    """
    pool = models.OneToOneField("proxy.Pool", on_delete=models.CASCADE, primary_key=True,
                                related_name="check_round")
    running_until = models.DateTimeField(null=True, blank=True)
    round_token = models.CharField(max_length=32, blank=True)
    rounds = models.PositiveBigIntegerField(default=0)
    rounds_skipped = models.PositiveBigIntegerField(default=0)
    last_skipped = models.DateTimeField(null=True, blank=True)
    last_started = models.DateTimeField(null=True, blank=True)
    last_finished = models.DateTimeField(null=True, blank=True)
    last_duration_ms = models.FloatField(null=True, blank=True)
    last_checked_targets = models.PositiveIntegerField(default=0)
    last_failed_targets = models.PositiveIntegerField(default=0)

    def __str__(self):
        return f"check rounds of pool {self.pool_id}"


class HealthState(models.Model):
    """Singleton (pk=1): a generation bumped on every health transition.

    Cheap to poll from processes the channel layer cannot reach (embedded mode):
    a changed generation means "read ``current_health()`` and tell the nodes".
    """
    generation = models.PositiveBigIntegerField(default=0)
    updated = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"health generation {self.generation}"
