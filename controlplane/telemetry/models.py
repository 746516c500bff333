from django.db import models

from dataplane import schema

STATUS_FIELDS = {"2xx": "status_2xx", "3xx": "status_3xx", "4xx": "status_4xx", "5xx": "status_5xx"}


def empty_histogram() -> list:
    return [0] * schema.STATS_BUCKET_SLOTS


class TrafficMinute(models.Model):
    """What one node forwarded for one route in one minute (UTC, control-plane clock).

    Rows are merged from the node's 10 s reports (``store.store_stats``). Histograms
    are per-bucket counts over ``schema.LATENCY_BUCKETS`` (seconds), the last slot
    being everything above the last bound. ``tenant`` is the route's tenant, copied so
    that scoped queries need no join.
    """
    minute = models.DateTimeField()
    route = models.ForeignKey("proxy.Route", on_delete=models.CASCADE, related_name="+")
    tenant = models.ForeignKey("tenancy.Tenant", null=True, blank=True, on_delete=models.CASCADE,
                               related_name="+")
    # SET_NULL: removing a node keeps the route's history (retention deletes it later).
    node = models.ForeignKey("publishing.Node", null=True, on_delete=models.SET_NULL,
                             related_name="+")
    requests = models.BigIntegerField(default=0)
    status_2xx = models.BigIntegerField(default=0)
    status_3xx = models.BigIntegerField(default=0)
    status_4xx = models.BigIntegerField(default=0)
    status_5xx = models.BigIntegerField(default=0)
    status_other = models.BigIntegerField(default=0, help_text="0xx and 1xx")
    by_proxy_status = models.JSONField(default=dict, blank=True)
    latency = models.JSONField(default=empty_histogram)
    upstream_latency = models.JSONField(default=empty_histogram)
    bytes_in = models.BigIntegerField(default=0)
    bytes_out = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["minute", "route_id"]
        constraints = [models.UniqueConstraint(fields=["minute", "route", "node"],
                                               name="traffic_minute_route_node")]
        indexes = [models.Index(fields=["route", "minute"], name="traffic_route_minute"),
                   models.Index(fields=["minute"], name="traffic_minute")]

    def __str__(self):
        return f"{self.minute:%Y-%m-%d %H:%M} route {self.route_id} node {self.node_id}: {self.requests}"


class TargetEjection(models.Model):
    """A target a node ejected by passive health (outlier detection), as last reported."""
    node = models.ForeignKey("publishing.Node", on_delete=models.CASCADE, related_name="+")
    target = models.ForeignKey("proxy.Target", on_delete=models.CASCADE, related_name="+")
    until = models.DateTimeField()
    reported = models.DateTimeField()

    class Meta:
        ordering = ["until"]
        constraints = [models.UniqueConstraint(fields=["node", "target"],
                                               name="ejection_node_target")]

    def __str__(self):
        return f"target {self.target_id} ejected by node {self.node_id} until {self.until:%H:%M:%S}"


class TargetFailureRun(models.Model):
    """Passive evidence: a node's current run of connect failures of one kind on a target
    (``count`` in a row, the first at ``since``), as last reported. A report without the
    target (a connect to it succeeded) deletes the row."""
    node = models.ForeignKey("publishing.Node", on_delete=models.CASCADE, related_name="+")
    target = models.ForeignKey("proxy.Target", on_delete=models.CASCADE, related_name="+")
    code = models.CharField(max_length=64, help_text="Proxy-Status type, e.g. connection_refused.")
    count = models.PositiveBigIntegerField()
    since = models.DateTimeField()
    reported = models.DateTimeField()

    class Meta:
        ordering = ["since"]
        constraints = [models.UniqueConstraint(fields=["node", "target"], name="failure_run_node_target")]

    def __str__(self):
        return f"target {self.target_id}: {self.count} {self.code} from node {self.node_id}"
