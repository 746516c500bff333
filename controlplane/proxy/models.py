from django.db import models

from dataplane import errorpages, schema


class TenantOwned(models.Model):
    tenant = models.ForeignKey("tenancy.Tenant", null=True, blank=True, on_delete=models.PROTECT,
                               related_name="+", help_text="Empty for platform-owned objects.")

    class Meta:
        abstract = True


class Pool(TenantOwned):
    ALGORITHMS = [(a, a) for a in schema.ALGORITHMS]
    HASH_ON = [(h, h) for h in schema.HASH_ON]
    CHECK_TYPES = [(c, c) for c in schema.CHECK_TYPES]

    name = models.CharField(max_length=200)
    algorithm = models.CharField(max_length=20, choices=ALGORITHMS, default="round_robin")
    hash_on = models.CharField(max_length=20, choices=HASH_ON, default="client_ip")
    hash_key = models.CharField(max_length=200, blank=True, help_text="Header or cookie name to hash on.")
    sticky_cookie = models.CharField(max_length=200, blank=True,
                                     help_text="Cookie name for sticky sessions; empty disables them.")
    connect_timeout = models.FloatField(default=5.0)
    read_timeout = models.FloatField(default=60.0)
    retries = models.PositiveSmallIntegerField(default=1)
    # Passive health (outlier ejection)
    passive_failures = models.PositiveSmallIntegerField(default=5)
    passive_ejection_seconds = models.FloatField(default=30.0)
    # Upstream TLS
    tls_enabled = models.BooleanField(default=False)
    tls_verify = models.BooleanField(default=True)
    tls_ca_pem = models.TextField(blank=True)
    tls_sni = models.CharField(max_length=253, blank=True)
    # Active health check
    # On by default (a TCP connect check): a pool nobody checks has targets of unknown health.
    health_check_enabled = models.BooleanField(default=True)
    health_check_type = models.CharField(max_length=4, choices=CHECK_TYPES, default="tcp")
    health_check_path = models.CharField(max_length=2048, default="/")
    health_check_method = models.CharField(max_length=10, default="GET")
    health_check_expected_statuses = models.CharField(max_length=200, default="200-399")
    health_check_host = models.CharField(max_length=253, blank=True)
    health_check_interval = models.FloatField(default=5.0)
    health_check_timeout = models.FloatField(default=2.0)
    healthy_threshold = models.PositiveSmallIntegerField(default=2)
    unhealthy_threshold = models.PositiveSmallIntegerField(default=3)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="pool_name_per_tenant")]

    def __str__(self):
        return self.name


class Target(models.Model):
    ENABLED, DISABLED, DRAINING = "enabled", "disabled", "draining"
    STATES = [(s, s) for s in schema.TARGET_STATES]

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="targets")
    host = models.CharField(max_length=253)
    port = models.PositiveIntegerField()
    weight = models.PositiveSmallIntegerField(default=1)
    state = models.CharField(max_length=10, choices=STATES, default=ENABLED)
    # Health as last decided by the active checks (state, not configuration).
    healthy = models.BooleanField(default=True)
    health_changed = models.DateTimeField(null=True, blank=True)
    health_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["pool", "host", "port"]
        constraints = [models.UniqueConstraint(fields=["pool", "host", "port"], name="target_unique_in_pool")]

    def __str__(self):
        return f"{self.host}:{self.port}"

    @property
    def enabled(self):
        return self.state == self.ENABLED


class Certificate(TenantOwned):
    UPLOADED, ACME = "uploaded", "acme"
    SOURCES = [(UPLOADED, "uploaded"), (ACME, "acme")]

    name = models.CharField(max_length=200)
    certificate_pem = models.TextField(help_text="Leaf first, then the chain.")
    private_key_encrypted = models.TextField(editable=False)
    subject = models.CharField(max_length=500, blank=True)
    issuer = models.CharField(max_length=500, blank=True)
    sans = models.JSONField(default=list, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    not_after = models.DateTimeField(null=True, blank=True)
    fingerprint = models.CharField(max_length=95, blank=True)
    chain_status = models.CharField(max_length=20, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    source = models.CharField(max_length=10, choices=SOURCES, default=UPLOADED)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class AccessList(TenantOwned):
    """Ordered allow/deny rules on the client address, reusable by its owner's routes."""
    ACTIONS = [(a, a) for a in schema.ACCESS_ACTIONS]

    name = models.CharField(max_length=100)
    rules = models.JSONField(default=list, blank=True,
                             help_text='Ordered [{"action": "allow" or "deny", "cidr": "10.0.0.0/8"}]; '
                                       "the first rule that matches decides.")
    default = models.CharField(max_length=5, choices=ACTIONS, default="allow",
                               help_text="What happens to an address no rule matches.")
    # basic auth (controlplane.proxy.basic_auth): never a password, only its slow hash
    users = models.JSONField(default=list, blank=True,
                             help_text='Basic-auth users: [{"username", "password_hash"}] (PBKDF2-HMAC-SHA256).')
    satisfy = models.CharField(max_length=3, choices=[(s, s) for s in schema.SATISFY], default="all",
                               help_text="With users: all = the rules and a password; any = either.")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="access_list_name_per_tenant")]

    def __str__(self):
        return self.name


class Route(TenantOwned):
    PATH_TYPES = [(p, p) for p in schema.PATH_TYPES]

    name = models.CharField(max_length=200)
    hosts = models.JSONField(default=list, help_text='Exact names and "*." wildcards.')
    path = models.CharField(max_length=2048, default="/")
    path_type = models.CharField(max_length=10, choices=PATH_TYPES, default="prefix")
    methods = models.JSONField(default=list, blank=True)
    headers = models.JSONField(default=list, blank=True, help_text='Header matches: [{"name", "value"}].')
    priority = models.IntegerField(default=0)
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="routes")
    strip_prefix = models.BooleanField(default=False)
    preserve_host = models.BooleanField(default=True)
    request_headers = models.JSONField(default=dict, blank=True,
                                       help_text='{"set": [{"name","value"}], "add": [...], "remove": [names]}')
    response_headers = models.JSONField(default=dict, blank=True)
    websocket = models.BooleanField(default=False)
    https_redirect = models.BooleanField(default=False)
    hsts_max_age = models.PositiveIntegerField(default=0, help_text="Seconds; 0 sends no HSTS header.")
    max_body_size = models.PositiveBigIntegerField(default=1024 * 1024)
    forwarded = models.BooleanField(default=False, help_text="Send an RFC 7239 Forwarded header.")
    certificate = models.ForeignKey(Certificate, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="routes", help_text="Empty: chosen by hostname.")
    acme = models.BooleanField(default=False, help_text="Obtain a certificate automatically (ACME).")
    access_list = models.ForeignKey(AccessList, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="routes", help_text="Who may reach the route (empty: everyone).")
    forward_authorization = models.BooleanField(
        default=False, help_text="Basic auth: pass the client's Authorization header to the upstream.")
    maintenance = models.BooleanField(default=False, help_text="Answer 503 with a maintenance page; "
                                                               "the pool gets no traffic.")
    retry_after = models.PositiveIntegerField(default=300, help_text="Seconds in the maintenance answer's "
                                                                     "Retry-After header; 0 sends none.")
    forward_auth = models.JSONField(
        null=True, blank=True, default=None,
        help_text='Ask an auth service before forwarding: {"url": "https://auth.example.com/api/authz/'
                  'forward-auth", "response_headers": ["Remote-User"], "timeout": 5}; empty: no forward auth.')
    rate_limit = models.JSONField(
        null=True, blank=True, default=None,
        help_text='Requests per second held across all nodes: {"rate": 100, "burst": 20, '
                  '"key": "none" | "client_ip" | "header", "header": "X-Api-Key"}; empty: no limit.')
    error_pages = models.JSONField(default=dict, blank=True,
                                   help_text='This route\'s own error pages: {"503": "<html>…"} for 403, 429, '
                                             "502, 503, 504 (over the platform defaults).")
    # basic auth on the route itself (controlplane.proxy.basic_auth): hashes only, never a password
    basic_auth = models.JSONField(
        null=True, blank=True, default=None,
        help_text='Basic auth: {"realm": "…" (empty: the route\'s name), "users": [{"username", '
                  '"password_hash"}]} (PBKDF2-HMAC-SHA256); empty: off. An access list\'s users apply too.')
    acme_challenge = models.CharField(
        max_length=12, blank=True, default="",
        choices=[("", "default"), ("http-01", "HTTP-01"), ("tls-alpn-01", "TLS-ALPN-01"), ("dns-01", "DNS-01")],
        help_text="ACME challenge of this route's orders; empty: the installation's default.")
    acme_profile = models.CharField(max_length=64, blank=True, default="",
                                    help_text="ACME profile (e.g. classic, tlsserver, shortlived); empty: the default.")
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="route_name_per_tenant")]

    def __str__(self):
        return self.name


class ErrorPage(models.Model):
    """A platform default error page (staff only): the HTML the nodes answer with for
    ``status`` where a route has no page of its own, and for 404 no route."""
    STATUSES = [(s, str(s)) for s in errorpages.STATUSES]

    status = models.PositiveSmallIntegerField(choices=STATUSES, unique=True)
    body = models.TextField(help_text="HTML with {{request_id}}, {{status}}, {{reason}}, {{error}}, {{details}}.")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["status"]

    def __str__(self):
        return f"error page {self.status}"
