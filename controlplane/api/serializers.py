"""Serializers: the shape of the JSON only (types, lists, nesting, write-only fields).

Business rules (hosts inside delegations, overlaps, quotas, upstream policy,
certificate checks ...) are never checked here: the views hand ``validated_data``
to the services, whose ``ValidationError`` messages come back as 400s naming the
field (``errors.drf_errors``). Tenants are addressed by slug everywhere.
"""
from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from django.db import models
from rest_framework import serializers
from rest_framework.validators import UniqueValidator

from controlplane.acme import services as acme_services
from controlplane.alerts.models import Alert, AlertChannel, Delivery
from controlplane.audit.models import AuditEntry
from controlplane.health import summary as health_summary
from controlplane.health.models import TargetHealth
from controlplane.proxy.models import Certificate, Pool, Route, Target
from controlplane.publishing import quarantined
from controlplane.publishing.models import ConfigVersion, Node
from controlplane.telemetry import queries
from controlplane.tenancy.models import ApiToken, Delegation, Membership, Tenant
from dataplane import schema as dataplane_schema

from .permissions import principal_for

MAX_ID = 2 ** 63 - 1


# ------------------------------------------------------------------ strict JSON types
# DRF coerces ("5" → 5, 0 → "0", "yes" → True); the API takes JSON types as the
# schema states them, so a wrong type is a 400 naming the field.

def _is_text(data) -> bool:
    """A str that is valid Unicode (JSON may smuggle lone surrogates in)."""
    if not isinstance(data, str):
        return False
    try:
        data.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class StrictCharField(serializers.CharField):
    def to_internal_value(self, data):
        if not _is_text(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSlugField(serializers.SlugField):
    def to_internal_value(self, data):
        if not _is_text(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class TenantField(serializers.SlugRelatedField):
    """A tenant by slug, limited to the tenants the caller may see (others: 'does not exist')."""

    def __init__(self, **kwargs):
        kwargs.setdefault("slug_field", "slug")
        kwargs.setdefault("help_text", "Tenant slug; null for a platform-owned object (staff only).")
        super().__init__(**kwargs)

    def get_queryset(self):
        request = self.context.get("request")
        if request is None:
            return Tenant.objects.all()
        return principal_for(request).tenants()


def tenant_field(**kwargs):
    return TenantField(queryset=Tenant.objects.all(), required=False, allow_null=True, **kwargs)


class ServiceModelSerializer(serializers.ModelSerializer):
    """A ModelSerializer whose writes go to services (the views call them): no
    unique validators here, the validation layer owns those rules."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField, models.TextField: StrictCharField, models.SlugField: StrictSlugField,
        models.IntegerField: StrictIntegerField, models.PositiveIntegerField: StrictIntegerField,
        models.PositiveSmallIntegerField: StrictIntegerField, models.PositiveBigIntegerField: StrictIntegerField,
        models.SmallIntegerField: StrictIntegerField, models.FloatField: StrictFloatField,
        models.BooleanField: StrictBooleanField,
    }

    def get_validators(self):
        return []

    def build_standard_field(self, field_name, model_field):
        field_class, kwargs = super().build_standard_field(field_name, model_field)
        kwargs["validators"] = [v for v in kwargs.get("validators", []) if not isinstance(v, UniqueValidator)]
        return field_class, kwargs

    def create(self, validated_data):  # pragma: no cover - views call the services
        raise NotImplementedError("writes go through the services")

    def update(self, instance, validated_data):  # pragma: no cover
        raise NotImplementedError("writes go through the services")


# ------------------------------------------------------------------ tenants and delegations

class QuotasSerializer(serializers.Serializer):
    routes = StrictIntegerField(source="max_routes", min_value=0, max_value=2 ** 31 - 1, required=False)
    pools = StrictIntegerField(source="max_pools", min_value=0, max_value=2 ** 31 - 1, required=False)
    targets = StrictIntegerField(source="max_targets", min_value=0, max_value=2 ** 31 - 1, required=False)
    certificates = StrictIntegerField(source="max_certificates", min_value=0, max_value=2 ** 31 - 1,
                                            required=False)


class RateLimitSerializer(serializers.Serializer):
    """A route's or a tenant's rate limit (dataplane.schema.RateLimit)."""
    rate = StrictFloatField(min_value=dataplane_schema.MIN_RATE, max_value=dataplane_schema.MAX_RATE, help_text=(
        "Requests per second admitted, held across all nodes together (each node admits its share; "
        "shares follow where the traffic arrives, rebalanced every 0.2 s)."))
    burst = StrictIntegerField(min_value=1, max_value=dataplane_schema.MAX_BURST, required=False, help_text=(
        "Requests admitted at once above the rate (the bucket size); default: one second of the rate."))
    key = serializers.ChoiceField(choices=list(dataplane_schema.RATE_LIMIT_KEYS), required=False, help_text=(
        "What is counted separately: none (all requests together), client_ip (the client address as "
        "trusted_proxies determine it), header (each value of the header named in header). Default: none, "
        "or header when a header is given."))
    header = StrictCharField(max_length=100, required=False, allow_blank=True, help_text=(
        "The request header whose value keys the limit (key header), e.g. X-Api-Key; requests without "
        "it share one bucket."))


class TenantSerializer(ServiceModelSerializer):
    slug = StrictSlugField(max_length=63, help_text="Set on creation; the tenant's address in the API.")
    quotas = QuotasSerializer(source="*", required=False, help_text="Maximum routes, pools, targets, certificates.")
    allowed_networks = serializers.ListField(
        child=StrictCharField(max_length=64), required=False,
        help_text="Networks (CIDR) this tenant's targets may use although the upstream policy forbids them.")
    delegations = serializers.SlugRelatedField(many=True, read_only=True, slug_field="suffix")
    rate_limit = RateLimitSerializer(required=False, allow_null=True, help_text=(
        "One rate limit over all the tenant's routes together, held across nodes (null: none); each "
        "route's own limit applies as well. Set by platform staff."))

    class Meta:
        model = Tenant
        fields = ["slug", "name", "quotas", "allowed_networks", "delegations", "rate_limit", "created"]
        read_only_fields = ["created"]


class OnDemandRefusalSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The name a node saw a TLS handshake for.")
    reason = serializers.CharField(help_text="Why no certificate was ordered (quota, rate limit, ask endpoint, ...).")
    count = serializers.IntegerField(help_text="How often it was refused.")
    last = serializers.DateTimeField(help_text="The last refusal.")


class OnDemandStateSerializer(serializers.Serializer):
    used = serializers.IntegerField(help_text="On-demand orders below this suffix (counted against the quota).")
    last_hour = serializers.IntegerField(help_text="On-demand orders made in the last hour.")
    issued = serializers.IntegerField(help_text="On-demand orders with an issued certificate.")
    failed = serializers.IntegerField(help_text="On-demand orders whose last attempt failed.")
    refusals = OnDemandRefusalSerializer(many=True, help_text="The last names not ordered, newest first.")


@extend_schema_field(OnDemandStateSerializer())
class OnDemandStateField(serializers.Field):
    """Read-only: how on-demand TLS below the suffix stands."""

    def __init__(self):
        super().__init__(source="*", read_only=True, help_text=(
            "On-demand TLS below this suffix: orders used, in the last hour, issued, failed; the last refusals."))

    def to_representation(self, obj):
        from controlplane.acme import ondemand
        return OnDemandStateSerializer(ondemand.state_of(obj)).data


class DelegationSerializer(ServiceModelSerializer):
    tenant = TenantField(queryset=Tenant.objects.all())
    suffix = StrictCharField(max_length=253, help_text="Covers itself and every name below it.")
    on_demand_tls = StrictBooleanField(required=False, help_text=(
        "On-demand TLS: the first TLS handshake for a new name below the suffix that a route of the tenant "
        "serves orders a certificate for it (the handshake itself does not wait). Platform staff only."))
    on_demand_max_certificates = StrictIntegerField(min_value=0, max_value=100000, required=False, help_text=(
        "At most this many on-demand certificates (orders) below the suffix."))
    on_demand_max_per_hour = StrictIntegerField(min_value=0, max_value=100000, required=False, help_text=(
        "At most this many new on-demand orders below the suffix per hour."))
    on_demand = OnDemandStateField()

    class Meta:
        model = Delegation
        fields = ["id", "tenant", "suffix", "on_demand_tls", "on_demand_max_certificates", "on_demand_max_per_hour",
                  "on_demand", "created"]
        read_only_fields = ["id", "created"]


class MembershipSerializer(ServiceModelSerializer):
    tenant = TenantField(queryset=Tenant.objects.all())
    user = StrictCharField(source="user.username", max_length=150, help_text="Username.")

    class Meta:
        model = Membership
        fields = ["id", "tenant", "user", "role"]
        read_only_fields = ["id"]


# ------------------------------------------------------------------ pools

def _current_ejections(context: dict) -> dict:
    """{target id: [{node, until, ...}]} of the passive ejections in force now, read once
    per serializer tree (the context dict is shared by the nested serializers)."""
    cached = context.get("_ejections")
    if cached is None:
        cached = {}
        for row in queries.ejections():
            cached.setdefault(row["target_id"], []).append(row)
        context["_ejections"] = cached
    return cached


def _health_facts(context: dict) -> tuple[dict, set]:
    """(passive evidence by target, {(target id, host, port)} with an active check result),
    read once per serializer tree."""
    cached = context.get("_health_facts")
    if cached is None:
        cached = context["_health_facts"] = (
            health_summary.passive_evidence(None),
            set(TargetHealth.objects.filter(last_checked__isnull=False)
                .values_list("target_id", "checked_host", "checked_port")))
    return cached


class ConnectFailureSerializer(serializers.Serializer):
    node = StrictCharField(help_text="The node that saw the failures.")
    code = StrictCharField(help_text="Their Proxy-Status type, e.g. connection_refused.")
    count = StrictIntegerField(help_text="Connect failures in a row.")
    since = serializers.DateTimeField(help_text="The first failure of the run.")
    reported = serializers.DateTimeField(help_text="When the node last reported the run.")


class TargetSerializer(serializers.Serializer):
    id = StrictIntegerField(read_only=True)
    host = StrictCharField(max_length=253)
    port = StrictIntegerField(min_value=1, max_value=65535)
    weight = StrictIntegerField(min_value=0, max_value=1000, required=False, default=1)
    enabled = StrictBooleanField(required=False, help_text="true: state enabled; false: state disabled.")
    state = serializers.ChoiceField(choices=Target.STATES, required=False,
                                    help_text="enabled, disabled or draining; wins over `enabled` when both are given.")
    healthy = StrictBooleanField(read_only=True, help_text="As last decided by the active checks.")
    health_reason = StrictCharField(read_only=True)
    ejected_until = serializers.DateTimeField(
        read_only=True, allow_null=True,
        help_text="Passive health: the latest end of an ejection some node reports now; null: not ejected.")
    ejected_by = serializers.ListField(child=StrictCharField(), read_only=True, required=False,
                                       help_text="Names of the nodes that have ejected the target now.")
    health = serializers.ChoiceField(
        choices=health_summary.STATES, read_only=True, required=False, help_text=(
            "What is known: `unhealthy` (the active check marked it down, or, with no active check result, "
            "a node reports an ejection or a run of connect failures), `healthy` (the active check has a "
            "result and it is up), `unknown` (never checked, no active check, or disabled). `healthy` above "
            "is what the nodes route by and stays true while the health is unknown."))
    connect_failures = ConnectFailureSerializer(
        many=True, read_only=True, required=False,
        help_text="Passive evidence: each node's current run of at least 3 connect failures of one kind "
                  "on this target (reported within the last hour).")

    def to_representation(self, instance):
        if isinstance(instance, Target):
            rows = _current_ejections(self.context).get(instance.pk, ())
            instance.ejected_until = max((r["until"] for r in rows), default=None)
            instance.ejected_by = [r["node"] for r in rows]
            evidence, checked = _health_facts(self.context)
            mine = evidence.get(instance.pk, [])
            instance.connect_failures = [e for e in mine if e.kind == "failing"]
            instance.health = health_summary.state_of(
                healthy=instance.healthy, target_state=instance.state,
                check_enabled=instance.pool.health_check_enabled,
                checked=(instance.pk, instance.host, instance.port) in checked, passive=bool(mine))
        return super().to_representation(instance)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        enabled = value.pop("enabled", None)
        if "state" not in value:
            value["state"] = Target.ENABLED if enabled in (None, True) else Target.DISABLED
        return value


HEALTH_CHECK_FIELDS = {
    "enabled": "health_check_enabled", "type": "health_check_type", "path": "health_check_path",
    "method": "health_check_method", "expected_statuses": "health_check_expected_statuses",
    "host": "health_check_host", "interval": "health_check_interval", "timeout": "health_check_timeout",
    "healthy_threshold": "healthy_threshold", "unhealthy_threshold": "unhealthy_threshold",
}


class HealthCheckSerializer(serializers.Serializer):
    enabled = StrictBooleanField(source="health_check_enabled", required=False)
    type = serializers.ChoiceField(source="health_check_type", choices=Pool.CHECK_TYPES, required=False)
    path = StrictCharField(source="health_check_path", max_length=2048, required=False)
    method = StrictCharField(source="health_check_method", max_length=10, required=False)
    expected_statuses = StrictCharField(source="health_check_expected_statuses", max_length=200,
                                              required=False, help_text='e.g. "200-399" or "200,204"')
    host = StrictCharField(source="health_check_host", max_length=253, required=False, allow_blank=True,
                                 help_text="Host header of the probe.")
    interval = StrictFloatField(source="health_check_interval", required=False)
    timeout = StrictFloatField(source="health_check_timeout", required=False)
    healthy_threshold = StrictIntegerField(min_value=0, max_value=32767, required=False)
    unhealthy_threshold = StrictIntegerField(min_value=0, max_value=32767, required=False)


class QuarantineSerializer(serializers.Serializer):
    """What keeps an object out of the config: a node rejected it."""
    kind = StrictCharField(help_text="What the node rejected: this object, or the pool or certificate this route "
                                     "needs (route, pool, certificate).")
    id = StrictIntegerField(source="object_id")
    name = StrictCharField(source="object_name")
    version = StrictIntegerField(help_text="The version the node rejected.")
    node = StrictCharField(source="node_name")
    error = StrictCharField(help_text="The node's error.")
    since = serializers.DateTimeField(source="created")


@extend_schema_field(QuarantineSerializer(allow_null=True))
class QuarantineField(serializers.Field):
    """Read-only: the quarantine that keeps the object out of the nodes' config, or null.
    Saving the object again (or, for a route, its pool or certificate) lifts it."""

    def __init__(self):
        super().__init__(source="*", read_only=True, help_text=(
            "Null, or the node's rejection that keeps this object out of the config until it is saved again."))

    def to_representation(self, obj):
        if "quarantines" not in self.context:  # once per response, not per object of a list
            self.context["quarantines"] = quarantined.in_force()
        kept_out = quarantined.keeping_out(obj, self.context["quarantines"])
        return QuarantineSerializer(kept_out).data if kept_out is not None else None


class PoolSerializer(ServiceModelSerializer):
    tenant = tenant_field()
    targets = TargetSerializer(many=True, required=False,
                               help_text="The full list: on update it replaces the stored targets.")
    health_check = HealthCheckSerializer(source="*", required=False, help_text="Active health check.")
    connect_timeout = StrictFloatField(required=False)
    read_timeout = StrictFloatField(required=False)
    passive_ejection_seconds = StrictFloatField(required=False)
    quarantine = QuarantineField()

    class Meta:
        model = Pool
        fields = ["id", "tenant", "name", "algorithm", "hash_on", "hash_key", "sticky_cookie", "connect_timeout",
                  "read_timeout", "retries", "passive_failures", "passive_ejection_seconds", "tls_enabled",
                  "tls_verify", "tls_ca_pem", "tls_sni", "health_check", "targets", "quarantine", "created", "updated"]
        read_only_fields = ["id", "created", "updated"]


# ------------------------------------------------------------------ routes

class HeaderSerializer(serializers.Serializer):
    name = StrictCharField(max_length=200)
    value = StrictCharField(max_length=4096, allow_blank=True)


class HeaderRulesSerializer(serializers.Serializer):
    set = HeaderSerializer(many=True, required=False, help_text="Replace the header with this value.")
    add = HeaderSerializer(many=True, required=False, help_text="Add the header (keeping existing ones).")
    remove = serializers.ListField(child=StrictCharField(max_length=200), required=False,
                                   help_text="Header names to remove.")


class AcmeStatusSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=["pending", "valid", "failed", "off"], help_text=(
        "pending: not issued yet (waiting for a worker or being validated); valid: issued and attached; "
        "failed: the last attempt failed (see error, next_retry); off: acme was switched off, the ACME "
        "certificate stays attached and is not renewed (it expires at not_after)."))
    names = serializers.ListField(child=serializers.CharField(), help_text="The names ordered.")
    error = serializers.CharField(allow_null=True, help_text="What the CA (or the control plane) said.")
    next_retry = serializers.DateTimeField(allow_null=True, help_text="When a failed order is tried again.")
    renew_at = serializers.DateTimeField(allow_null=True, help_text="When the issued certificate is renewed.")
    certificate = serializers.IntegerField(allow_null=True, help_text="Id of the issued certificate.")
    in_progress = serializers.BooleanField(help_text="A worker is working on the order right now.")
    not_after = serializers.DateTimeField(allow_null=True, help_text="When the issued certificate expires.")
    challenge = serializers.CharField(allow_null=True, help_text="The challenge the orders use (null when off).")
    profile = serializers.CharField(allow_null=True, help_text="The ACME profile asked for (null: the CA's default).")


@extend_schema_field(AcmeStatusSerializer(allow_null=True))
class AcmeStatusField(serializers.Field):
    """Read-only: the route's ACME order as it really stands, or null when it asks for none."""

    def __init__(self):
        super().__init__(source="*", read_only=True, help_text=(
            "Null, or the state of the route's automatic certificate order."))

    def to_representation(self, obj):
        order = acme_services.status(obj)
        return AcmeStatusSerializer(order).data if order is not None else None


class ForwardAuthSerializer(serializers.Serializer):
    url = StrictCharField(max_length=2048, help_text=(
        "http or https URL of the auth service, e.g. Authelia https://auth.example.com/api/authz/forward-auth, "
        "Authentik https://authentik.example.com/outpost.goauthentik.io/auth/traefik, oauth2-proxy "
        "https://oauth2.example.com/oauth2/auth. A tenant's URL obeys its upstream policy."))
    response_headers = serializers.ListField(
        child=StrictCharField(max_length=200), required=False, max_length=32, help_text=(
            "Header names copied from a 2xx answer into the upstream request (e.g. Remote-User, "
            "Remote-Groups, Remote-Email, Remote-Name); client-sent headers of these names are always removed."))
    timeout = StrictFloatField(required=False, min_value=0.1, max_value=30.0, help_text=(
        "Seconds the auth service has to answer (default 5); then 503."))


class BasicAuthUserSerializer(serializers.Serializer):
    """A basic-auth user of an access list or a route (controlplane.proxy.basic_auth)."""
    username = StrictCharField(max_length=64, help_text=(
        "1 to 64 characters without spaces, colons or control characters; unique in the list."))
    password = StrictCharField(write_only=True, required=False, allow_blank=True, max_length=1024,
                               style={"input_type": "password"}, trim_whitespace=False, help_text=(
                                   "Write-only: hashed (PBKDF2-HMAC-SHA256, random salt) and never returned. "
                                   "Required for a new user; omit it to keep an existing user's password."))


class RouteBasicAuthSerializer(serializers.Serializer):
    realm = StrictCharField(max_length=200, required=False, allow_blank=True, help_text=(
        "Printable ASCII shown by browsers (WWW-Authenticate realm) and in Proxy-Status details "
        "\"basic auth <realm>\"; empty or left out: the route's name."))
    users = BasicAuthUserSerializer(many=True, help_text=(
        "At least one user. The list given replaces the stored one: a user left out is removed, a user "
        "given without a password keeps it. At most 100 users, 20 new passwords per write."))


class RouteSerializer(ServiceModelSerializer):
    tenant = tenant_field()
    rate_limit = RateLimitSerializer(required=False, allow_null=True, help_text=(
        "Rate limit of this route (null: none). Over it the nodes answer 429 with Retry-After and "
        "Proxy-Status: switchyard; error=http_request_denied; details=\"rate limit\". The tenant's own "
        "limit (tenants/) applies as well."))
    hosts = serializers.ListField(child=StrictCharField(max_length=253), min_length=1,
                                  help_text='Exact names and "*." wildcards.')
    methods = serializers.ListField(child=StrictCharField(max_length=20), required=False,
                                    help_text="Empty: every method.")
    headers = HeaderSerializer(many=True, required=False, help_text="Header matches: all must match.")
    pool = StrictIntegerField(source="pool_id", min_value=1, max_value=MAX_ID, help_text="Pool id.")
    certificate = StrictIntegerField(source="certificate_id", min_value=1, max_value=MAX_ID,
                                           required=False, allow_null=True,
                                           help_text="Certificate id; null: chosen by hostname.")
    request_headers = HeaderRulesSerializer(required=False, help_text="Rules applied to the request sent upstream.")
    response_headers = HeaderRulesSerializer(required=False, help_text="Rules applied to the response.")
    priority = StrictIntegerField(min_value=-(2 ** 31), max_value=2 ** 31 - 1, required=False)
    max_body_size = StrictIntegerField(min_value=0, max_value=MAX_ID, required=False)
    hsts_max_age = StrictIntegerField(min_value=0, max_value=2 ** 31 - 1, required=False)
    acme = serializers.BooleanField(required=False, help_text=(
        "Obtain a certificate for the hosts automatically: the control plane orders it from the "
        "operator's ACME CA (the challenge of acme_challenge), attaches it to the route when issued "
        "and renews it. Refused when the installation has no ACME CA configured, and for wildcard hosts "
        "without DNS-01. Set to false, the certificate stays attached but is no longer renewed. "
        "acme_status says how the order stands."))
    acme_challenge = serializers.ChoiceField(
        choices=["", "http-01", "tls-alpn-01", "dns-01"], required=False, allow_blank=True, help_text=(
            "Challenge of this route's orders: http-01 (answered by every node on port 80), tls-alpn-01 "
            "(the nodes' TLS listener), dns-01 (RFC 2136 update to the operator's DNS server; the only one "
            "for wildcards). Empty: the installation's default (SWITCHYARD_ACME_CHALLENGE; dns-01 for "
            "wildcards when a DNS server is configured). A change retries a pending or failed order at "
            "once; an issued certificate keeps until its renewal."))
    acme_profile = serializers.CharField(max_length=64, required=False, allow_blank=True, help_text=(
        "ACME certificate profile asked of the CA (e.g. classic, tlsserver, shortlived); empty: "
        "SWITCHYARD_ACME_PROFILE. A change retries a pending or failed order at once; an issued "
        "certificate keeps until its renewal."))
    acme_status = AcmeStatusField()
    access_list = StrictIntegerField(source="access_list_id", min_value=1, max_value=MAX_ID, required=False,
                                     allow_null=True, help_text=(
                                         "Access list id (of the route's own owner, see access-lists/); null: "
                                         "everyone may reach the route. A refused client gets 403."))
    maintenance = serializers.BooleanField(required=False, help_text=(
        "Maintenance switch: the nodes answer 503 with a maintenance page (JSON for Accept: application/json) "
        "and Retry-After, without touching the pool."))
    retry_after = StrictIntegerField(min_value=0, max_value=7 * 86400, required=False, help_text=(
        "Seconds in the maintenance answer's Retry-After header (default 300; 0 sends none)."))
    forward_authorization = serializers.BooleanField(required=False, help_text=(
        "When the route's access list has basic-auth users, or the route has basic_auth: pass the client's "
        "Authorization header to the "
        "upstream (default false: the node removes it once the password is checked)."))
    error_pages = serializers.DictField(
        child=StrictCharField(allow_blank=True, trim_whitespace=False), required=False, help_text=(
            'This route\'s own error pages, {"<status>": "<html>"} for 403, 429, 502, 503, 504 (over the '
            "platform defaults of error-pages/; 404 is the platform's alone). Placeholders {{request_id}}, "
            "{{status}}, {{reason}}, {{error}}, {{details}} (filled in HTML-escaped); any other is refused; "
            "at most 64 KiB of UTF-8 each. The 503 page also answers the maintenance switch. Clients whose "
            "Accept asks for JSON get {status, error, details, request_id} instead."))
    forward_auth = ForwardAuthSerializer(required=False, allow_null=True, help_text=(
        "Forward auth: before forwarding, the nodes GET this auth service (X-Forwarded-Method, -Proto, -Host, "
        "-Uri, -For and the client's Cookie and Authorization). 2xx forwards the request with response_headers "
        "copied from the answer; any other status is returned to the client as is (e.g. a 302 to the login "
        "page); timeout or failure gives 503 (Proxy-Status ...; details=\"forward auth\"). null: off."))
    basic_auth = RouteBasicAuthSerializer(required=False, allow_null=True, help_text=(
        "Basic auth on this route (null: off): clients must give a username and password of `users` "
        "(401 with WWW-Authenticate: Basic realm=\"<realm>\" until they do; repeated failures from one "
        "address get 429). Passwords are write-only (stored as PBKDF2 hashes); reads show the realm and "
        "usernames. With an access list that has users too, the one Authorization must pass both. The "
        "Authorization header is removed before forwarding unless forward_authorization is true."))
    quarantine = QuarantineField()

    class Meta:
        model = Route
        fields = ["id", "tenant", "name", "hosts", "path", "path_type", "methods", "headers", "priority", "pool",
                  "strip_prefix", "preserve_host", "request_headers", "response_headers", "websocket",
                  "https_redirect", "hsts_max_age", "max_body_size", "forwarded", "certificate", "acme",
                  "acme_challenge", "acme_profile", "acme_status",
                  "access_list", "maintenance", "retry_after", "error_pages", "forward_auth",
                  "forward_authorization", "basic_auth",
                  "rate_limit",
                  "enabled", "quarantine", "created", "updated"]
        read_only_fields = ["id", "created", "updated"]

    def to_representation(self, obj):
        data = super().to_representation(obj)
        auth = data.get("basic_auth")
        if auth is not None and not auth.get("realm"):
            auth["realm"] = obj.name  # the realm the nodes use
        return data


# ------------------------------------------------------------------ certificates

class CertificateSerializer(ServiceModelSerializer):
    tenant = tenant_field()
    certificate_pem = StrictCharField(max_length=100_000, help_text="PEM: the leaf, then the chain.")
    private_key_pem = StrictCharField(
        write_only=True, required=False, max_length=20_000, style={"input_type": "password"},
        help_text="PEM private key. Write-only: never returned. Required on upload; on update, "
                  "omit it to keep the stored key (which must match the new certificate).")
    ca_bundle_pem = StrictCharField(write_only=True, required=False, allow_blank=True, max_length=200_000,
                                          help_text="Extra trusted roots for the chain check (not stored).")
    sans = serializers.ListField(child=StrictCharField(), read_only=True)
    warnings = serializers.ListField(child=StrictCharField(), read_only=True)
    quarantine = QuarantineField()

    class Meta:
        model = Certificate
        fields = ["id", "tenant", "name", "certificate_pem", "private_key_pem", "ca_bundle_pem", "subject", "sans",
                  "issuer", "not_before", "not_after", "fingerprint", "chain_status", "warnings", "source",
                  "quarantine", "created", "updated"]
        read_only_fields = ["id", "subject", "issuer", "not_before", "not_after", "fingerprint", "chain_status",
                            "source", "created", "updated"]


# ------------------------------------------------------------------ nodes and versions

class NodeSerializer(ServiceModelSerializer):
    last_error = serializers.JSONField(read_only=True, help_text="The errors of the last NACK.")
    rate_limit_fallback_since = serializers.SerializerMethodField(help_text=(
        "Set while the node runs its rate limits on fallback shares (1 / nodes of each limit) because the "
        "shared store (Redis) is unreachable: since when. Null: shares are exchanged normally."))

    class Meta:
        model = Node
        fields = ["id", "name", "revoked", "connected", "applied_version", "applied_hash", "last_ack",
                  "last_apply_ms", "rejected_version", "rejected_hash", "last_error", "last_error_at", "last_seen",
                  "connected_since", "software_version", "workers", "rate_limit_fallback_since", "created"]
        read_only_fields = [f for f in fields if f != "name"]

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_rate_limit_fallback_since(self, node):
        from controlplane.publishing.ratelimits import fallback_since
        since = fallback_since([node.pk]).get(node.pk)
        return serializers.DateTimeField().to_representation(since) if since is not None else None


class NodeCreatedSerializer(NodeSerializer):
    token = StrictCharField(read_only=True, help_text="The node's token: shown only in this response.")

    class Meta(NodeSerializer.Meta):
        fields = NodeSerializer.Meta.fields + ["token"]


class VersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ConfigVersion
        fields = ["number", "sha256", "author", "note", "created", "rolled_back_from"]
        read_only_fields = fields


class VersionDetailSerializer(VersionSerializer):
    snapshot = serializers.JSONField(read_only=True, help_text="The canonical snapshot (no private keys).")

    class Meta(VersionSerializer.Meta):
        fields = VersionSerializer.Meta.fields + ["snapshot"]
        read_only_fields = fields


class FieldChangeSerializer(serializers.Serializer):
    field = StrictCharField()
    before = serializers.JSONField(allow_null=True)
    after = serializers.JSONField(allow_null=True)


class ChangeSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["route", "pool", "certificate"])
    id = StrictIntegerField()
    name = StrictCharField()
    action = serializers.ChoiceField(choices=["added", "removed", "changed"])
    fields = FieldChangeSerializer(many=True)


class DiffSerializer(serializers.Serializer):
    changes = ChangeSerializer(many=True)

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = StrictIntegerField(help_text="The older version number.")
        fields["to"] = StrictIntegerField(help_text="The newer version number.")
        return fields


class RollbackResultSerializer(serializers.Serializer):
    rolled_back_to = StrictIntegerField(help_text="The version whose content is live again.")
    version = VersionSerializer(allow_null=True, help_text="The new version; null when nothing changed.")


# ------------------------------------------------------------------ audit and alerts

class AuditEntrySerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    before = serializers.JSONField(read_only=True)
    after = serializers.JSONField(read_only=True)

    class Meta:
        model = AuditEntry
        fields = ["id", "created", "actor", "tenant", "object_type", "object_id", "object_repr", "action", "before",
                  "after", "note", "source_address", "config_version"]
        read_only_fields = fields


class AlertChannelSerializer(ServiceModelSerializer):
    tenant = tenant_field()
    emails = serializers.ListField(child=StrictCharField(max_length=254), required=False,
                                   help_text="For kind email: the recipients.")
    url = StrictCharField(max_length=200, required=False, allow_blank=True, help_text="For kind webhook.")
    secret = StrictCharField(write_only=True, required=False, allow_blank=True, max_length=500,
                                   style={"input_type": "password"},
                                   help_text="Webhook signing secret. Write-only: omit to keep the stored one, "
                                             "\"\" to clear it.")
    has_secret = serializers.SerializerMethodField()
    send_open_alerts = serializers.BooleanField(
        write_only=True, required=False,
        help_text="On create only: also deliver, once and to this new channel only, the alerts raised before "
                  "it that are still open (a certificate still expiring, a target still down, a node still "
                  "disconnected). Default false.")

    class Meta:
        model = AlertChannel
        fields = ["id", "tenant", "name", "kind", "emails", "url", "secret", "has_secret", "enabled", "created",
                  "send_open_alerts"]
        read_only_fields = ["id", "created"]

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_has_secret(self, obj) -> bool:
        return bool(obj.secret_encrypted)


class DeliverySerializer(serializers.ModelSerializer):
    channel_name = StrictCharField(source="channel.name", read_only=True)

    class Meta:
        model = Delivery
        fields = ["id", "channel", "channel_name", "attempt", "status", "response_code", "error", "created"]
        read_only_fields = fields


class AlertSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    deliveries = DeliverySerializer(many=True, read_only=True)
    data = serializers.JSONField(read_only=True)

    class Meta:
        model = Alert
        fields = ["id", "tenant", "kind", "subject", "body", "dedup_key", "data", "created", "deliveries"]
        read_only_fields = fields


# ------------------------------------------------------------------ API tokens

class ApiTokenSerializer(ServiceModelSerializer):
    tenant = tenant_field(help_text="Tenant slug for a per-tenant token; null for a token that acts as you.")
    user = StrictCharField(source="user.username", read_only=True)
    role = serializers.ChoiceField(choices=Membership.ROLES, required=False, allow_blank=True,
                                   help_text="Role of a per-tenant token (default viewer).")
    name = StrictCharField(max_length=100, required=False, allow_blank=True)
    revoked = serializers.DateTimeField(read_only=True, allow_null=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "user", "tenant", "role", "prefix", "created", "last_used", "revoked"]
        read_only_fields = ["id", "user", "prefix", "created", "last_used", "revoked"]


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = StrictCharField(read_only=True, help_text="The token: shown only in this response.")

    class Meta(ApiTokenSerializer.Meta):
        fields = ApiTokenSerializer.Meta.fields + ["token"]


class ChannelTestResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField(help_text="Whether the channel accepted the test message.")
    message = serializers.CharField(help_text="What happened, e.g. \"hooks.example.com answered 200\" or the error.")
    response_code = serializers.IntegerField(allow_null=True, help_text="The webhook's HTTP status (null for e-mail).")
