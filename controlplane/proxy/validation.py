"""Business rules, checked before anything is stored: the one validation layer.

The admin, the REST API and the dashboard call these through
``controlplane.proxy.services``; none repeats them. Each function works on an
unsaved (or changed) model instance, normalises it in place where a value has a
canonical form (hosts, methods, target addresses) and raises
``django.core.exceptions.ValidationError`` with a message dict keyed by model
field names. Field-level syntax (header names, CR/LF/NUL, protected headers,
ranges) is checked by compiling the object and running ``dataplane.schema`` on it,
so the rules a node enforces are written once.
"""
from __future__ import annotations

import contextlib
import contextvars
import ipaddress

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db.models.signals import post_save

from controlplane import crypto, pem
from controlplane.publishing import compiler, gate
from controlplane.publishing.gate import POOL_PREFIXES, POOL_UNPREFIXED
from controlplane.tenancy import upstream_policy
from controlplane.tenancy.models import Delegation, Tenant
from dataplane import schema

from . import acme_choice
from . import forwardauth
from .models import AccessList, Certificate, Pool, Route, Target


REQUIRED = "This field is required."  # Django's own words for a missing value, on every form and in the API
MISSING_CODES = ("blank", "null", "required")


class Errors:
    """Collects messages per field; ``raise_if_any`` turns them into a ValidationError."""

    def __init__(self):
        self.by_field: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        messages = self.by_field.setdefault(field, [])
        if message not in messages:
            messages.append(message)

    def merge(self, error: ValidationError) -> None:
        """Django's field checks; "This field cannot be blank." reads as on a form."""
        for field, field_errors in error.error_dict.items():
            for item in field_errors:
                self.add(field, REQUIRED if item.code in MISSING_CODES else " ".join(item.messages))

    def __contains__(self, field: str) -> bool:
        return field in self.by_field

    def raise_if_any(self) -> None:
        if self.by_field:
            raise ValidationError(self.by_field)


def _basic(obj, errors: Errors, exclude=()) -> None:
    """Django's own field checks (blank, choices, max_length), not uniqueness."""
    try:
        obj.full_clean(exclude=list(exclude), validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        errors.merge(exc)


def _tenant_label(tenant) -> str:
    return f"tenant {tenant.slug}" if tenant is not None else "the platform"


# ------------------------------------------------------------------ schema

ROUTE_FK_PATHS = ("pool", "certificate", "id", "tenant", "access_list")


def _split(path: str, prefix: str) -> tuple[str, str]:
    """``routes[0].request_headers.set[1].name`` → (``request_headers``, ``set[1].name``)."""
    rest = path[len(prefix):].lstrip(".")
    for i, ch in enumerate(rest):
        if ch in ".[":
            return rest[:i], rest[i:].lstrip(".")
    return rest, ""


def _route_schema(route: Route, errors: Errors) -> None:
    data = {"pools": [], "routes": [compiler.route_dict(route)], "certificates": []}
    for err in gate.snapshot_errors(data):
        field, sub = _split(err.path, "routes[0]")
        if field in ROUTE_FK_PATHS or not err.path.startswith("routes[0]"):
            continue
        errors.add(field, f"{sub}: {err.message}" if sub else err.message)


def _pool_field(field: str, sub: str) -> tuple[str, str]:
    if field in POOL_PREFIXES and sub:
        name, rest = _split(sub, "")
        full = name if name in POOL_UNPREFIXED else POOL_PREFIXES[field] + name
        return full, rest
    return field, sub


def _pool_schema(pool: Pool, targets: list[dict], errors: Errors) -> None:
    data = {"pools": [compiler.pool_dict(pool, targets)], "routes": [], "certificates": []}
    for err in gate.snapshot_errors(data):
        field, sub = _pool_field(*_split(err.path, "pools[0]"))
        if field in ("id", "tenant", "policy"):
            continue
        if field == "targets":
            errors.add("targets", _target_message(targets, sub, err.message))
        else:
            errors.add(field, f"{sub}: {err.message}" if sub else err.message)


def _target_message(targets: list[dict], sub: str, message: str) -> str:
    index, _, attr = sub.partition("].")
    try:
        t = targets[int(index.strip("["))]
        label = f"{t.get('host')}:{t.get('port')}"
    except (ValueError, IndexError):
        label = sub
    return f"{label}: {attr or 'target'} {message}"


# ------------------------------------------------------------------ tenants and delegations

def validate_tenant(tenant: Tenant) -> None:
    errors = Errors()
    _basic(tenant, errors)
    if Tenant.objects.filter(slug=tenant.slug).exclude(pk=tenant.pk).exists():
        errors.add("slug", f"a tenant with slug {tenant.slug} already exists")
    networks = tenant.allowed_networks
    if not isinstance(networks, list):
        errors.add("allowed_networks", "must be a list of networks such as 10.20.0.0/16")
    elif upstream_policy.invalid_networks(networks):
        bad = ", ".join(upstream_policy.invalid_networks(networks))
        errors.add("allowed_networks", f"{bad}: not a network (write e.g. 10.20.0.0/16)")
    elif tenant.pk:
        _recheck_tenant_targets(tenant, errors)
    validate_tenant_rate_limit(tenant, errors)
    errors.raise_if_any()


RATE_LIMIT_FIELDS = ("rate", "burst", "key", "header")


def normalize_rate_limit(value, errors: Errors, field: str = "rate_limit"):
    """A route's or tenant's rate limit as stored: None, or {"rate": float, "burst": int,
    "key", "header"} (burst defaults to one second of the rate). The bounds are the
    schema's (``dataplane.schema._rate_limit``), checked with the rest of the object."""
    if value is None or value == {} or value == "":
        return None
    if not isinstance(value, dict):
        errors.add(field, 'must be an object {"rate", "burst", "key", "header"} or null')
        return value
    unknown = sorted(str(k) for k in value if k not in RATE_LIMIT_FIELDS)
    if unknown:
        errors.add(field, f"unknown field {', '.join(unknown)} (use rate, burst, key, header)")
    rate = value.get("rate")
    if rate is None:
        errors.add(field, "rate: is required (requests per second)")
        return value
    if isinstance(rate, int) and not isinstance(rate, bool):
        rate = float(rate)
    burst = value.get("burst")
    if burst is None and isinstance(rate, float):
        burst = max(1, int(-(-rate // 1)))
    header = value.get("header", "") or ""
    key = value.get("key") or ("header" if header else "none")
    out = {"rate": rate, "burst": burst, "key": key, "header": header.strip() if isinstance(header, str) else header}
    for err in gate.snapshot_errors({"pools": [], "routes": [], "certificates": [],
                                     "tenant_rate_limits": [{"tenant": "t", "limit": out}]}):
        sub = err.path[len("tenant_rate_limits[0].limit"):].lstrip(".")
        errors.add(field, f"{sub}: {err.message}" if sub else err.message)
    return out


def validate_tenant_rate_limit(tenant: Tenant, errors: Errors) -> None:
    tenant.rate_limit = normalize_rate_limit(tenant.rate_limit, errors)


def _recheck_tenant_targets(tenant: Tenant, errors: Errors) -> None:
    """Narrowing allowed_networks may not strand targets the tenant already uses."""
    for target in Target.objects.filter(pool__tenant=tenant).select_related("pool"):
        for problem in upstream_policy.check_target(target.host, tenant.allowed_networks):
            errors.add("allowed_networks", f"pool {target.pool.name}: {problem}")


def normalize_suffix(suffix: str) -> str:
    try:
        norm = schema.normalize_host(suffix or "")
    except ValueError as exc:
        raise ValidationError({"suffix": [str(exc)]}) from None
    if norm.startswith("*."):
        raise ValidationError({"suffix": ["write the suffix without *.: it covers every name below it"]})
    return norm


def overlaps(a: str, b: str) -> bool:
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def validate_delegation(tenant: Tenant, suffix: str, *, exclude_id=None) -> str:
    """Returns the normalised suffix; refuses one that meets another tenant's."""
    if tenant is None or not tenant.pk:
        raise ValidationError({"tenant": ["a delegation needs a tenant"]})
    norm = normalize_suffix(suffix)
    errors = Errors()
    for other in Delegation.objects.exclude(pk=exclude_id).select_related("tenant"):
        if other.tenant_id == tenant.pk and other.suffix == norm:
            errors.add("suffix", f"{norm} is already delegated to tenant {tenant.slug}")
        elif other.tenant_id != tenant.pk and overlaps(norm, other.suffix):
            errors.add("suffix", f"{norm} overlaps {other.suffix}, delegated to tenant {other.tenant.slug}")
    _check_platform_hosts(norm, errors)
    errors.raise_if_any()
    return norm


def _check_platform_hosts(suffix: str, errors: Errors) -> None:
    """A delegation may not take the host of a platform route. A platform wildcard above
    the suffix (``*.example.com`` over ``shop.example.com``) is not taken: the tenant's
    routes match first, and it stays the catch-all for names the tenant does not route."""
    delegation = Delegation(suffix=suffix)
    for route in Route.objects.filter(tenant__isnull=True).order_by("id"):
        covered = [host for host in route.hosts or [] if delegation.covers(host)]
        if covered:
            errors.add("suffix", f"{suffix} covers {', '.join(covered)}, served by platform route {route.name}; "
                                 "move or delete that route first")


def validate_delegation_removal(delegation: Delegation, replacement: str | None = None) -> None:
    """A delegation may go (or change to ``replacement``) only when the tenant's routes
    and the names on its certificates stay inside its delegations."""
    others = list(Delegation.objects.filter(tenant_id=delegation.tenant_id).exclude(pk=delegation.pk))
    if replacement:
        others.append(Delegation(tenant_id=delegation.tenant_id, suffix=replacement))
    old = Delegation.objects.filter(pk=delegation.pk).first() or delegation
    errors = Errors()

    def stranded(host: str) -> bool:
        return old.covers(host) and not any(d.covers(host) for d in others)
    for route in Route.objects.filter(tenant_id=delegation.tenant_id):
        for host in filter(stranded, route.hosts or []):
            errors.add("suffix", f"route {route.name} uses {host}, which only {old.suffix} covers")
    for cert in Certificate.objects.filter(tenant_id=delegation.tenant_id).order_by("id"):
        for host in filter(stranded, compiler.certificate_hosts(cert)):
            errors.add("suffix", f"certificate {cert.name} names {host}, which only {old.suffix} covers; "
                                 "delete or replace it first")
    errors.raise_if_any()


def validate_tenant_removal(tenant: Tenant) -> None:
    owned = [(model, noun) for model, noun in ((Route, "routes"), (Pool, "pools"), (Certificate, "certificates"),
                                               (AccessList, "access lists"))
             if model.objects.filter(tenant=tenant).exists()]
    if owned:
        raise ValidationError({NON_FIELD_ERRORS: [
            f"tenant {tenant.slug} still owns {', '.join(noun for _, noun in owned)}; delete them first"]})


# ------------------------------------------------------------------ quotas

def _check_quota(errors: Errors, tenant, model, limit_field: str, noun: str, exclude_pk=None,
                 adding: int = 1, queryset=None) -> None:
    if tenant is None:
        return
    limit = getattr(tenant, limit_field)
    qs = queryset if queryset is not None else model.objects.filter(tenant=tenant).exclude(pk=exclude_pk)
    if qs.count() + adding > limit:
        errors.add("tenant", f"tenant {tenant.slug} may have at most {limit} {noun} "
                             f"(quota {limit_field}); delete one or ask the platform operator for more")


# ------------------------------------------------------------------ pools

def normalize_target(raw) -> dict:
    """A target dict {host, port, weight, state}; ``enabled`` (bool) is accepted for state."""
    t = dict(raw) if isinstance(raw, dict) else {"host": raw}
    if "state" not in t and "enabled" in t:
        t["state"] = Target.ENABLED if t["enabled"] else Target.DISABLED
    t.pop("enabled", None)
    t.setdefault("weight", 1)
    t.setdefault("state", Target.ENABLED)
    return {k: t.get(k) for k in ("id", "host", "port", "weight", "state") if k in t}


def _target_host(host) -> str:
    if not isinstance(host, str) or not host.strip():
        raise ValueError("host is required")
    literal = upstream_policy.parse_ip_literal(host)
    return str(literal) if literal is not None else schema.normalize_host(host)


def _clean_targets(pool: Pool, targets: list[dict], errors: Errors) -> list[dict]:
    tenant = pool.tenant if pool.tenant_id else None
    seen, clean = set(), []
    for t in targets:
        try:
            t["host"] = _target_host(t.get("host"))
        except ValueError as exc:
            errors.add("targets", f"{t.get('host')}: {exc}")
            continue
        if (t["host"], t.get("port")) in seen:
            errors.add("targets", f"{t['host']}:{t.get('port')} is listed twice")
        seen.add((t["host"], t.get("port")))
        if tenant is not None:
            for problem in upstream_policy.check_target(t["host"], tenant.allowed_networks or [],
                                                        port=t.get("port")):
                errors.add("targets", problem)
        clean.append(t)
    return clean


def _check_pool_in_use(pool: Pool, targets: list[dict], errors: Errors) -> None:
    if not pool.pk:
        return
    routes = list(Route.objects.filter(pool_id=pool.pk))
    if any(r.tenant_id != pool.tenant_id for r in routes):
        errors.add("tenant", "routes of another owner use this pool; move or delete them first")
    enabled = [r.name for r in routes if r.enabled]
    if enabled and not any(t.get("state") == Target.ENABLED for t in targets):
        errors.add("targets", f"routes {', '.join(enabled)} use this pool: keep at least one enabled target")


def validate_pool(pool: Pool, targets) -> list[dict]:
    """Checks a pool with the full list of its targets; returns the normalised targets."""
    errors = Errors()
    _basic(pool, errors, exclude=["tenant"])
    targets = [normalize_target(t) for t in targets]
    tenant = pool.tenant if pool.tenant_id else None
    if Pool.objects.filter(tenant=tenant, name=pool.name).exclude(pk=pool.pk).exists():
        errors.add("name", f"{_tenant_label(tenant)} already has a pool named {pool.name}")
    _check_quota(errors, tenant, Pool, "max_pools", "pools", exclude_pk=pool.pk)
    others = Target.objects.filter(pool__tenant=tenant).exclude(pool_id=pool.pk) if tenant else None
    _check_quota(errors, tenant, Target, "max_targets", "targets", adding=len(targets), queryset=others)
    targets = _clean_targets(pool, targets, errors)
    _check_pool_in_use(pool, targets, errors)
    _pool_schema(pool, targets, errors)
    errors.raise_if_any()
    return targets


def validate_pool_removal(pool: Pool) -> None:
    names = list(Route.objects.filter(pool_id=pool.pk).values_list("name", flat=True))
    if names:
        raise ValidationError({NON_FIELD_ERRORS: [
            f"pool {pool.name} is used by routes {', '.join(names)}; point them elsewhere first"]})


# ------------------------------------------------------------------ routes

def normalize_hosts(hosts, errors: Errors) -> list[str]:
    if not isinstance(hosts, (list, tuple)) or not hosts:
        errors.add("hosts", REQUIRED)
        return []
    clean = []
    for host in hosts:
        try:
            norm = schema.normalize_host(host if isinstance(host, str) else "")
        except ValueError as exc:
            errors.add("hosts", str(exc))
            continue
        if norm not in clean:
            clean.append(norm)
    return clean


def _normalize_methods(route: Route, errors: Errors) -> None:
    methods = route.methods or []
    if not isinstance(methods, (list, tuple)) or not all(isinstance(m, str) for m in methods):
        errors.add("methods", "must be a list of HTTP methods")
        return
    route.methods = list(dict.fromkeys(m.strip().upper() for m in methods))


def match_key(route: Route) -> tuple:
    headers = route.headers if isinstance(route.headers, list) else []
    pairs = sorted((str(h.get("name", "")).lower(), str(h.get("value", ""))) for h in headers if isinstance(h, dict))
    return (route.path, route.path_type, tuple(sorted(route.methods or [])), tuple(pairs))


def _check_delegations(route: Route, errors: Errors) -> None:
    if not route.tenant_id:
        return
    delegations = list(Delegation.objects.filter(tenant_id=route.tenant_id))
    for host in route.hosts:
        if not any(d.covers(host) for d in delegations):
            errors.add("hosts", f"{host} is outside tenant {route.tenant.slug}'s delegations")


def _check_pool(route: Route, errors: Errors) -> None:
    pool = Pool.objects.filter(pk=route.pool_id).first() if route.pool_id else None
    if pool is not None and pool.tenant_id and route.tenant_id is None:
        errors.add("pool", f"pool {pool.name} belongs to tenant {pool.tenant.slug}; "
                           "a route may only use a pool of its own owner")
        return
    if pool is None or pool.tenant_id != route.tenant_id:
        errors.add("pool", f"unknown pool {route.pool_id}" if route.pool_id else REQUIRED)
        return
    if route.enabled and not pool.targets.filter(state=Target.ENABLED).exists():
        errors.add("pool", f"pool {pool.name} has no enabled targets")


def _check_certificate(route: Route, errors: Errors) -> None:
    if not route.certificate_id:
        return
    cert = Certificate.objects.filter(pk=route.certificate_id).select_related("tenant").first()
    if cert is None or (route.tenant_id and cert.tenant_id != route.tenant_id):
        # a tenant learns nothing of a certificate it does not own
        errors.add("certificate", f"unknown certificate {route.certificate_id}")
        return
    if cert.tenant_id != route.tenant_id:
        errors.add("certificate", f"certificate {cert.name} belongs to tenant {cert.tenant.slug}; "
                                  "a route may only use a certificate of its own owner")
        return
    for host in route.hosts:
        if not pem.covers(cert.sans or [], host):
            errors.add("certificate", f"certificate {cert.name} does not cover {host} "
                                      f"(it covers {', '.join(cert.sans or []) or 'no names'})")


def _check_acme(route: Route, errors: Errors) -> None:
    """A route asking for an automatic certificate: ACME must be configured and every host
    must be validatable by the order's challenge (``acme_choice``). An ACME certificate that
    no longer covers the hosts is detached (the hosts are served by hostname until the new
    order is issued)."""
    if route.acme_profile and not acme_choice.PROFILE.fullmatch(route.acme_profile):
        errors.add("acme_profile", "a profile name is letters, digits, '.', '_' and '-' "
                                   "(e.g. classic, tlsserver, shortlived)")
    if not route.acme:
        return
    if not settings.SWITCHYARD_ACME_DIRECTORY:
        errors.add("acme", "automatic certificates are off in this installation "
                           "(the operator has not set SWITCHYARD_ACME_DIRECTORY)")
    method = acme_choice.method(route.hosts, route.acme_challenge)
    if method == acme_choice.DNS_01 and not acme_choice.dns_configured():
        errors.add("acme_challenge", "DNS-01 needs the operator's DNS server for dynamic updates "
                                     "(SWITCHYARD_ACME_DNS_SERVER and SWITCHYARD_ACME_DNS_ZONE are not set)")
    wildcards = [h for h in route.hosts if h.startswith("*.")]
    if wildcards and method != acme_choice.DNS_01:
        if route.acme_challenge:
            errors.add("acme_challenge", f"{', '.join(wildcards)}: a wildcard can only be validated with "
                                         f"DNS-01, not {method}")
        else:
            errors.add("acme", f"{', '.join(wildcards)}: wildcards need DNS-01, which this installation does "
                               "not offer (the operator has not set SWITCHYARD_ACME_DNS_SERVER and "
                               "SWITCHYARD_ACME_DNS_ZONE)")
    cert = Certificate.objects.filter(pk=route.certificate_id).first() if route.certificate_id else None
    if cert is None:
        return
    if cert.source != Certificate.ACME:
        errors.add("certificate", f"certificate {cert.name} was uploaded; a route that gets its certificate "
                                  "automatically (acme) cannot also name an uploaded one")
    elif not all(pem.covers(cert.sans or [], host) for host in route.hosts):
        route.certificate = None


def _overlap_message(route: Route, other: Route, host: str) -> str:
    if other.tenant_id == route.tenant_id:
        owner = f"route {other.name}"
    else:
        owner = "a platform route" if other.tenant_id is None else "another tenant's route"
    return f"{host} {route.path} ({route.path_type}) is already matched the same way by {owner}"


def _lowered(hosts) -> set[str]:
    """A stored route's hosts as the overlap check compares them (not a list: none)."""
    return {str(h).lower().rstrip(".") for h in hosts} if isinstance(hosts, list) else set()


class _OverlapIndex:
    """Within ``overlap_index()``: (path, path_type, lowered host) -> ids of the routes
    that had it at some point of the block. Built from one query on first use, then
    only grown by every Route save (``post_save``), never shrunk: a save undone by a
    savepoint rollback leaves extra candidates, which are re-read from the database and
    dropped. So the candidates are always a superset of the routes sharing a host, and
    a batch of N routes costs O(N) instead of a scan of every route per route."""

    def __init__(self):
        self.pks: dict[tuple, set[int]] | None = None

    def add(self, pk, path, path_type, hosts) -> None:
        for host in _lowered(hosts):
            self.pks.setdefault((path, path_type, host), set()).add(pk)

    def candidates(self, route: Route, wanted: set[str]) -> set[int]:
        if self.pks is None:
            self.pks = {}
            for row in Route.objects.filter(enabled=True).values_list("pk", "path", "path_type", "hosts"):
                self.add(*row)
        found = set()
        for host in wanted:
            found |= self.pks.get((route.path, route.path_type, host), set())
        found.discard(route.pk)
        return found


_overlap_index: contextvars.ContextVar[_OverlapIndex | None] = contextvars.ContextVar(
    "switchyard_overlap_index", default=None)


@contextlib.contextmanager
def overlap_index():
    """Many route writes in a row (a configuration file's): the overlap check looks its
    candidates up in one index instead of scanning every route each time. Use it
    inside the transaction (under the publish lock) that makes the writes, with every
    Route write in the block going through ``Model.save``."""
    token = _overlap_index.set(_OverlapIndex())
    try:
        yield
    finally:
        _overlap_index.reset(token)


def _route_saved(sender, instance, **kwargs) -> None:
    index = _overlap_index.get()
    if index is not None and index.pks is not None:
        index.add(instance.pk, instance.path, instance.path_type, instance.hosts)


post_save.connect(_route_saved, sender=Route, dispatch_uid="switchyard-overlap-index")


def _sharing(route: Route, wanted: set[str]) -> list[int]:
    """Ids of the other enabled routes on the same path with a host in ``wanted``."""
    index = _overlap_index.get()
    others = Route.objects.filter(enabled=True, path=route.path, path_type=route.path_type).exclude(pk=route.pk)
    if index is not None:
        others = others.filter(pk__in=sorted(index.candidates(route, wanted)))
    # Only the routes sharing a host are loaded whole: a batch of N routes stays cheap.
    return [pk for pk, hosts in others.values_list("pk", "hosts") if wanted.intersection(_lowered(hosts))]


def _check_overlaps(route: Route, errors: Errors) -> None:
    if not route.enabled:
        return
    key = match_key(route)
    wanted = set(route.hosts)
    sharing = _sharing(route, wanted) if wanted else []
    for other in Route.objects.filter(pk__in=sharing):
        if match_key(other) != key:
            continue
        for host in set(route.hosts) & set(normalize_hosts(other.hosts, Errors())):
            errors.add("hosts", _overlap_message(route, other, host))


def validate_route(route: Route) -> None:
    """Checks a route as it would be stored; normalises hosts and methods in place."""
    errors = Errors()
    _basic(route, errors, exclude=["tenant", "pool", "certificate", "hosts"])
    route.hosts = normalize_hosts(route.hosts, errors)
    _normalize_methods(route, errors)
    tenant = route.tenant if route.tenant_id else None
    if Route.objects.filter(tenant=tenant, name=route.name).exclude(pk=route.pk).exists():
        errors.add("name", f"{_tenant_label(tenant)} already has a route named {route.name}")
    _check_quota(errors, tenant, Route, "max_routes", "routes", exclude_pk=route.pk)
    _check_delegations(route, errors)
    _check_pool(route, errors)
    _check_acme(route, errors)
    _check_certificate(route, errors)
    _check_access_list(route, errors)
    route.rate_limit = normalize_rate_limit(route.rate_limit, errors)
    forwardauth.check(route, errors)  # its shape, and a tenant's URL against its upstream policy
    if "hosts" not in errors and "methods" not in errors:
        _check_overlaps(route, errors)
        _route_schema(route, errors)
    errors.raise_if_any()


# ------------------------------------------------------------------ certificates

def validate_certificate(cert: Certificate, private_key_pem: str | None, *, ca_bundle_pem: str = ""):
    """Parses and checks the PEM and fills the parsed fields of ``cert``.

    ``private_key_pem`` None keeps the stored key (it must still match). Returns the
    ``pem.CertReport`` (warnings are stored, errors refuse the upload).
    """
    errors = Errors()
    _basic(cert, errors, exclude=["tenant", "private_key_encrypted"])
    tenant = cert.tenant if cert.tenant_id else None
    _check_quota(errors, tenant, Certificate, "max_certificates", "certificates", exclude_pk=cert.pk)
    if private_key_pem is None and not cert.private_key_encrypted:
        errors.add("private_key_pem", REQUIRED)
    report = pem.inspect_pem(cert.certificate_pem, private_key_pem or _stored_key(cert),
                             ca_bundle_pem=ca_bundle_pem)
    for field, messages in report.errors.items():
        for message in messages:
            errors.add(field, message)
    if report.ok:
        _fill_parsed(cert, report)
        _check_names_delegated(cert, tenant, errors)
        _check_users_covered(cert, errors)
    errors.raise_if_any()
    return report


def _stored_key(cert: Certificate) -> str | None:
    return crypto.decrypt(cert.private_key_encrypted) if cert.private_key_encrypted else None


def _fill_parsed(cert: Certificate, report) -> None:
    cert.subject, cert.issuer, cert.sans = report.subject[:500], report.issuer[:500], report.sans
    cert.not_before, cert.not_after, cert.fingerprint = report.not_before, report.not_after, report.fingerprint
    cert.chain_status, cert.warnings = report.chain_status, report.warnings


def _check_names_delegated(cert: Certificate, tenant, errors: Errors) -> None:
    """A tenant certificate may name only hosts inside the tenant's delegations."""
    if tenant is None:
        return
    delegations = list(Delegation.objects.filter(tenant=tenant))
    outside = [h for h in compiler.certificate_hosts(cert) if not any(d.covers(h) for d in delegations)]
    if outside:
        errors.add("certificate_pem", f"names {', '.join(outside)}, outside tenant {tenant.slug}'s delegations: "
                                      "a tenant certificate may name only hosts inside them")


def _check_users_covered(cert: Certificate, errors: Errors) -> None:
    if not cert.pk:
        return
    for route in Route.objects.filter(certificate_id=cert.pk).select_related("tenant"):
        if route.tenant_id != cert.tenant_id:
            errors.add("tenant", f"route {route.name} of {_tenant_label(route.tenant)} uses this certificate; "
                                 "a route may only use a certificate of its own owner")
        for host in route.hosts:
            if not pem.covers(cert.sans, host):
                errors.add("certificate_pem", f"does not cover {host}, which route {route.name} serves with it")


def validate_certificate_removal(cert: Certificate) -> None:
    names = list(Route.objects.filter(certificate_id=cert.pk).values_list("name", flat=True))
    if names:
        raise ValidationError({NON_FIELD_ERRORS: [
            f"certificate {cert.name} is used by routes {', '.join(names)}; change them first"]})


# ------------------------------------------------------------------ access lists

def _check_access_list(route: Route, errors: Errors) -> None:
    """A route may use one access list of its own owner only (tenant isolation)."""
    if not route.access_list_id:
        return
    acl = AccessList.objects.filter(pk=route.access_list_id).select_related("tenant").first()
    if acl is None or (route.tenant_id and acl.tenant_id != route.tenant_id):
        # a tenant learns nothing of an access list it does not own
        errors.add("access_list", f"unknown access list {route.access_list_id}")
    elif acl.tenant_id != route.tenant_id:
        errors.add("access_list", f"access list {acl.name} belongs to tenant {acl.tenant.slug}; "
                                  "a route may only use an access list of its own owner")


def normalize_rules(rules, errors: Errors) -> list[dict]:
    """``[{"action", "cidr"}]`` (or lines ``allow 10.0.0.0/8``) in order, each network
    in its canonical form; problems are reported as ``rule N: ...`` under ``rules``."""
    if rules in (None, ""):
        return []
    if not isinstance(rules, (list, tuple)):
        errors.add("rules", "must be a list of rules")
        return []
    clean = []
    for n, rule in enumerate(rules, 1):
        if not isinstance(rule, dict):
            errors.add("rules", f"rule {n}: must be an object with action and cidr")
            continue
        action = str(rule.get("action", "")).strip().lower()
        cidr = str(rule.get("cidr", "")).strip()
        if action not in schema.ACCESS_ACTIONS:
            errors.add("rules", f"rule {n}: action must be allow or deny")
            continue
        try:
            cidr = str(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            errors.add("rules", f"rule {n}: {cidr!r} is not an IPv4 or IPv6 address or network")
            continue
        clean.append({"action": action, "cidr": cidr})
    if len(clean) > schema.MAX_ACCESS_RULES:
        errors.add("rules", f"at most {schema.MAX_ACCESS_RULES} rules")
    return clean


def _access_list_schema(acl: AccessList, errors: Errors) -> None:
    data = {"pools": [], "routes": [], "certificates": [], "access_lists": [compiler.access_list_dict(acl)]}
    for err in gate.snapshot_errors(data):
        field, sub = _split(err.path, "access_lists[0]")
        if field in ("id", "tenant") or not err.path.startswith("access_lists[0]"):
            continue
        errors.add(field, f"{sub}: {err.message}" if sub else err.message)


def validate_access_list(acl: AccessList) -> None:
    """Checks an access list as it would be stored; normalises its rules in place."""
    errors = Errors()
    _basic(acl, errors, exclude=["tenant", "rules"])
    acl.rules = normalize_rules(acl.rules, errors)
    tenant = acl.tenant if acl.tenant_id else None
    if AccessList.objects.filter(tenant=tenant, name=acl.name).exclude(pk=acl.pk).exists():
        errors.add("name", f"{_tenant_label(tenant)} already has an access list named {acl.name}")
    if acl.pk:
        others = Route.objects.filter(access_list_id=acl.pk).exclude(tenant_id=acl.tenant_id)
        names = list(others.values_list("name", flat=True))
        if names:
            errors.add("tenant", f"routes {', '.join(names)} of another owner use this access list")
    if "rules" not in errors and "name" not in errors:
        _access_list_schema(acl, errors)
    errors.raise_if_any()


def validate_access_list_removal(acl: AccessList) -> None:
    names = list(Route.objects.filter(access_list_id=acl.pk).values_list("name", flat=True))
    if names:
        raise ValidationError({NON_FIELD_ERRORS: [
            f"access list {acl.name} is used by routes {', '.join(names)}; detach it from them first"]})
