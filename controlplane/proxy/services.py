"""The actions every UI calls: validate → write rows → publish → audit, atomically.

The admin, the REST API, the dashboard and management commands change routes,
pools, targets, certificates, tenants and delegations only through these. Each
runs in one ``transaction.atomic()`` under the publisher's lock: when validation
or publishing refuses, ``ValidationError`` (a message dict keyed by model field
names) propagates and nothing is stored.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json

from django.db import transaction

from controlplane.audit.services import Actor, record
from controlplane import crypto
from controlplane.publishing import publisher
from controlplane.tenancy.models import Delegation, Tenant

from . import basic_auth, validation
from .models import AccessList, Certificate, Pool, Route, Target

__all__ = [
    "Actor", "create_pool", "update_pool", "save_pool", "delete_pool", "create_route", "update_route",
    "save_route", "delete_route", "create_tenant", "update_tenant", "save_tenant", "delete_tenant",
    "create_delegation", "update_delegation", "delete_delegation", "create_certificate",
    "update_certificate", "delete_certificate", "create_access_list", "update_access_list",
    "save_access_list", "delete_access_list", "serialize", "etag_of", "locked_current", "PreconditionFailed",
]

SECRET_FIELDS = {"private_key_encrypted", "secret_encrypted", "token_hash"}
SKIPPED_FIELDS = {"created", "updated", "healthy", "health_changed", "health_reason"}


# ------------------------------------------------------------------ helpers

def _json(value):
    return value.isoformat() if isinstance(value, (dt.datetime, dt.date)) else value


def serialize(obj) -> dict:
    """The audit view of a row: concrete fields, foreign keys as ids, no secrets."""
    data = {}
    for field in obj._meta.concrete_fields:
        if field.name in SECRET_FIELDS or field.name in SKIPPED_FIELDS:
            continue
        data[field.name] = _json(getattr(obj, field.attname))
    if isinstance(obj, Pool) and obj.pk:
        data["targets"] = [serialize(t) for t in obj.targets.order_by("id")]
    if isinstance(obj, AccessList):  # basic auth: a fingerprint of each hash, never the hash
        data["users"] = basic_auth.audit_view(obj.users)
    if isinstance(obj, Route):  # the route's own basic auth: fingerprints too
        data["basic_auth"] = basic_auth.route_auth_audit(obj.basic_auth)
    return data


# ------------------------------------------------------------------ versions (ETag / If-Match)

class PreconditionFailed(Exception):
    """The object changed since the writer read it (its ``If-Match`` is stale)."""

    def __init__(self, current_etag: str):
        super().__init__("the object changed since you read it")
        self.current_etag = current_etag


def etag_of(obj) -> str:
    """The object's version as a strong ETag: a digest of what a writer can change
    (secrets included, health state and timestamps not), so it moves on every write
    that changes the object and on nothing else."""
    state = serialize(obj)
    for name in sorted(SECRET_FIELDS):
        if hasattr(obj, name):
            state[name] = getattr(obj, name)
    digest = hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()
    return f'"{digest[:32]}"'


def etag_matches(header: str | None, etag: str) -> bool:
    """``If-Match`` semantics (strong comparison): ``*`` or one of the listed tags."""
    if header is None:
        return True
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in tags


@contextlib.contextmanager
def locked_current(obj, if_match: str | None = None):
    """The stored row of ``obj``, re-read under the config lock and a row lock inside a
    transaction, for a read-modify-write that cannot undo a concurrent writer's change.
    Raises ``PreconditionFailed`` when ``if_match`` no longer matches its ETag."""
    with transaction.atomic():
        publisher.lock()
        current = type(obj).objects.select_for_update().get(pk=obj.pk)
        if not etag_matches(if_match, etag_of(current)):
            raise PreconditionFailed(etag_of(current))
        yield current
    _mirror(obj, current)


def _mirror(obj, saved) -> None:
    """Callers holding the object they passed in see what was stored."""
    if obj is not saved:
        for field in obj._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))


def _set_fields(obj, fields: dict) -> None:
    names = {f.name for f in obj._meta.concrete_fields} | {f.attname for f in obj._meta.concrete_fields}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field {', '.join(unknown)}")
    for name, value in fields.items():
        setattr(obj, name, value)


def _tenant(value):
    if value is None or isinstance(value, Tenant):
        return value
    return Tenant.objects.filter(slug=value).first() or Tenant.objects.get(pk=value)


def _resolve_fk(fields: dict, name: str, model) -> None:
    """``pool=<Pool or id>`` → ``pool_id`` (an unknown id is reported by validation)."""
    if name in fields and not isinstance(fields[name], (model, type(None))):
        fields[f"{name}_id"] = int(fields.pop(name))


def _before(model, obj) -> dict | None:
    if obj.pk is None:
        return None
    stored = model.objects.filter(pk=obj.pk).first()
    return serialize(stored) if stored is not None else None


def _finish(actor, action: str, obj, before, note: str, after=..., tenant=None) -> None:
    version = publisher.publish(actor, note)
    after = serialize(obj) if after is ... else after
    record(actor, action, obj, before, after, note, tenant=tenant,
           config_version=version.number if version else None,
           object_id=(before or {}).get("id") if action == "delete" else None)


# ------------------------------------------------------------------ pools

def create_pool(actor, *, tenant=None, targets=(), note="", **fields) -> Pool:
    pool = Pool(tenant=_tenant(tenant))
    _set_fields(pool, fields)
    return save_pool(actor, pool, targets=list(targets), note=note)


def update_pool(actor, pool: Pool, *, targets=None, note="", if_match=None, **fields) -> Pool:
    """Change the named fields of the stored pool; ``targets`` None keeps them, a list
    (of dicts) replaces them."""
    if "tenant" in fields:
        fields["tenant"] = _tenant(fields["tenant"])
    with locked_current(pool, if_match) as current:
        _set_fields(current, fields)
        return save_pool(actor, current, targets=None if targets is None else list(targets), note=note)


def save_pool(actor, pool: Pool, *, targets=None, note="") -> Pool:
    """Create or update ``pool`` as it is in memory (the admin calls this directly)."""
    with transaction.atomic():
        publisher.lock()
        before = _before(Pool, pool)
        current = targets if targets is not None else _stored_targets(pool)
        clean = validation.validate_pool(pool, current)
        pool.save()
        if targets is not None:
            _replace_targets(pool, clean)
        _finish(actor, "update" if before else "create", pool, before, note)
    return pool


def _stored_targets(pool: Pool) -> list[dict]:
    if pool.pk is None:
        return []
    return list(pool.targets.order_by("id").values("id", "host", "port", "weight", "state"))


def _replace_targets(pool: Pool, targets: list[dict]) -> None:
    """Keep rows (ids, health state) of targets whose host:port stays; drop the rest."""
    existing = {(t.host, t.port): t for t in pool.targets.all()}
    wanted = {(t["host"], t["port"]): t for t in targets}
    pool.targets.exclude(id__in=[existing[k].id for k in wanted if k in existing]).delete()
    for key, t in wanted.items():
        row = existing.get(key)
        weight, state = t.get("weight", 1), t.get("state", Target.ENABLED)
        if row is None:
            Target.objects.create(pool=pool, host=t["host"], port=t["port"], weight=weight, state=state)
        elif (row.weight, row.state) != (weight, state):
            row.weight, row.state = weight, state
            row.save(update_fields=["weight", "state"])  # health state belongs to the checker


def delete_pool(actor, pool: Pool, note="", if_match=None) -> None:
    with locked_current(pool, if_match) as pool:
        validation.validate_pool_removal(pool)
        before = serialize(pool)
        pool.delete()
        _finish(actor, "delete", pool, before, note, after=None, tenant=pool.tenant if pool.tenant_id else None)


# ------------------------------------------------------------------ routes

def create_route(actor, *, tenant=None, note="", **fields) -> Route:
    """``pool`` (and ``certificate``, ``access_list``) may be an object or an id."""
    _resolve_fk(fields, "pool", Pool)
    _resolve_fk(fields, "certificate", Certificate)
    _resolve_fk(fields, "access_list", AccessList)
    route = Route(tenant=_tenant(tenant))
    if "basic_auth" in fields:  # passwords are hashed, never stored (basic_auth.stored_route_auth)
        fields["basic_auth"] = basic_auth.stored_route_auth(None, fields["basic_auth"])
    _set_fields(route, fields)
    return save_route(actor, route, note=note)


def update_route(actor, route: Route, note="", if_match=None, **fields) -> Route:
    """Change the named fields of the stored route."""
    _resolve_fk(fields, "pool", Pool)
    _resolve_fk(fields, "certificate", Certificate)
    _resolve_fk(fields, "access_list", AccessList)
    if "tenant" in fields:
        fields["tenant"] = _tenant(fields["tenant"])
    with locked_current(route, if_match) as current:
        if "basic_auth" in fields:  # a user given without a password keeps its stored hash
            fields["basic_auth"] = basic_auth.stored_route_auth(current.basic_auth, fields["basic_auth"])
        _set_fields(current, fields)
        return save_route(actor, current, note=note)


def save_route(actor, route: Route, *, note="") -> Route:
    with transaction.atomic():
        publisher.lock()
        before = _before(Route, route)
        validation.validate_route(route)
        route.save()
        _finish(actor, "update" if before else "create", route, before, note)
    return route


def delete_route(actor, route: Route, note="", if_match=None) -> None:
    with locked_current(route, if_match) as route:
        before = serialize(route)
        route.delete()
        _finish(actor, "delete", route, before, note, after=None, tenant=route.tenant if route.tenant_id else None)


# ------------------------------------------------------------------ tenants and delegations

def create_tenant(actor, *, note="", **fields) -> Tenant:
    tenant = Tenant()
    _set_fields(tenant, fields)
    return save_tenant(actor, tenant, note=note)


def update_tenant(actor, tenant: Tenant, *, note="", if_match=None, **fields) -> Tenant:
    with locked_current(tenant, if_match) as current:
        _set_fields(current, fields)
        return save_tenant(actor, current, note=note)


def save_tenant(actor, tenant: Tenant, *, note="") -> Tenant:
    with transaction.atomic():
        publisher.lock()
        before = _before(Tenant, tenant)
        validation.validate_tenant(tenant)
        tenant.save()
        _finish(actor, "update" if before else "create", tenant, before, note)
    return tenant


def delete_tenant(actor, tenant: Tenant, note="", if_match=None) -> None:
    with locked_current(tenant, if_match) as tenant:
        validation.validate_tenant_removal(tenant)
        before = serialize(tenant)
        tenant.delete()
        _finish(actor, "delete", tenant, before, note, after=None)


def create_delegation(actor, tenant: Tenant, suffix: str, note="") -> Delegation:
    return save_delegation(actor, Delegation(tenant=_tenant(tenant), suffix=suffix), note=note)


def update_delegation(actor, delegation: Delegation, suffix: str, note="", if_match=None) -> Delegation:
    with locked_current(delegation, if_match) as current:
        current.suffix = suffix
        return save_delegation(actor, current, note=note)


ON_DEMAND_FIELDS = ("on_demand_tls", "on_demand_max_certificates", "on_demand_max_per_hour")


def update_delegation_on_demand(actor, delegation: Delegation, note="", if_match=None, **fields) -> Delegation:
    """Switch on-demand TLS for a delegation and set its limits (platform staff only; see
    controlplane.acme.ondemand). Only the ``ON_DEMAND_FIELDS`` given are changed."""
    from django.core.exceptions import ValidationError

    bad = {name: "must be a whole number from 0 to 100000" for name in ON_DEMAND_FIELDS[1:]
           if fields.get(name) is not None and (isinstance(fields[name], bool) or not isinstance(fields[name], int)
                                                or not 0 <= fields[name] <= 100000)}
    if bad:
        raise ValidationError(bad)
    with locked_current(delegation, if_match) as current:
        for name in ON_DEMAND_FIELDS:
            if fields.get(name) is not None:
                setattr(current, name, fields[name])
        return save_delegation(actor, current, note=note)


def save_delegation(actor, delegation: Delegation, *, note="") -> Delegation:
    with transaction.atomic():
        publisher.lock()
        before = _before(Delegation, delegation)
        tenant = delegation.tenant if delegation.tenant_id else None
        delegation.suffix = validation.validate_delegation(tenant, delegation.suffix, exclude_id=delegation.pk)
        if before:
            validation.validate_delegation_removal(delegation, replacement=delegation.suffix)
        delegation.save()
        _finish(actor, "update" if before else "create", delegation, before, note)
    return delegation


def delete_delegation(actor, delegation: Delegation, note="", if_match=None) -> None:
    with locked_current(delegation, if_match) as delegation:
        validation.validate_delegation_removal(delegation)
        before = serialize(delegation)
        delegation.delete()
        _finish(actor, "delete", delegation, before, note, after=None, tenant=delegation.tenant)


# ------------------------------------------------------------------ certificates

def create_certificate(actor, *, tenant=None, private_key_pem: str, note="", ca_bundle_pem="",
                       **fields) -> Certificate:
    """Upload a certificate (``name``, ``certificate_pem``) with its private key."""
    cert = Certificate(tenant=_tenant(tenant))
    _set_fields(cert, fields)
    return save_certificate(actor, cert, private_key_pem=private_key_pem, note=note, ca_bundle_pem=ca_bundle_pem)


def update_certificate(actor, cert: Certificate, *, private_key_pem: str | None = None, note="",
                       ca_bundle_pem="", if_match=None, **fields) -> Certificate:
    """Rename or renew; ``private_key_pem`` None keeps the stored key (it must match)."""
    if "tenant" in fields:
        fields["tenant"] = _tenant(fields["tenant"])
    with locked_current(cert, if_match) as current:
        _set_fields(current, fields)
        return save_certificate(actor, current, private_key_pem=private_key_pem, note=note,
                                ca_bundle_pem=ca_bundle_pem)


def save_certificate(actor, cert: Certificate, *, private_key_pem: str | None = None, note="",
                     ca_bundle_pem="") -> Certificate:
    with transaction.atomic():
        publisher.lock()
        before = _before(Certificate, cert)
        validation.validate_certificate(cert, private_key_pem, ca_bundle_pem=ca_bundle_pem)
        if private_key_pem:
            cert.private_key_encrypted = crypto.encrypt(private_key_pem)
        cert.save()
        _finish(actor, "update" if before else "create", cert, before, note)
    return cert


def delete_certificate(actor, cert: Certificate, note="", if_match=None) -> None:
    with locked_current(cert, if_match) as cert:
        validation.validate_certificate_removal(cert)
        before = serialize(cert)
        cert.delete()
        _finish(actor, "delete", cert, before, note, after=None, tenant=cert.tenant if cert.tenant_id else None)


# ------------------------------------------------------------------ access lists

def create_access_list(actor, *, tenant=None, note="", **fields) -> AccessList:
    """``name``, ``rules`` (ordered ``[{"action", "cidr"}]``) and ``default``; basic auth:
    ``users`` (see ``basic_auth.stored_users``: passwords are hashed, never stored) and ``satisfy``."""
    acl = AccessList(tenant=_tenant(tenant))
    if "users" in fields:
        fields["users"] = basic_auth.stored_users([], fields["users"])
    _set_fields(acl, fields)
    return save_access_list(actor, acl, note=note)


def update_access_list(actor, acl: AccessList, *, note="", if_match=None, **fields) -> AccessList:
    if "tenant" in fields:
        fields["tenant"] = _tenant(fields["tenant"])
    with locked_current(acl, if_match) as current:
        if "users" in fields:  # a user given without a password keeps its stored hash
            fields["users"] = basic_auth.stored_users(current.users, fields["users"])
        _set_fields(current, fields)
        return save_access_list(actor, current, note=note)


def save_access_list(actor, acl: AccessList, *, note="") -> AccessList:
    with transaction.atomic():
        publisher.lock()
        before = _before(AccessList, acl)
        validation.validate_access_list(acl)
        acl.save()
        _finish(actor, "update" if before else "create", acl, before, note)
    return acl


def delete_access_list(actor, acl: AccessList, note="", if_match=None) -> None:
    with locked_current(acl, if_match) as acl:
        validation.validate_access_list_removal(acl)
        before = serialize(acl)
        acl.delete()
        _finish(actor, "delete", acl, before, note, after=None, tenant=acl.tenant if acl.tenant_id else None)
