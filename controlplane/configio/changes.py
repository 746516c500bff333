"""Each planned change as the service call that validates and stores it.

Order: tenants (and new delegations), certificates, pools, routes, alert channels are
created and changed first, so that what a route names exists when it is stored; then
routes, alert channels, pools, certificates, dropped delegations and tenants are
deleted, users before what they use. Each change runs in a savepoint: a refused one
is listed and the next still runs, except those that depend on a refused one (a route
whose pool was refused), which would only repeat its problem.
"""
from __future__ import annotations

import copy

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction

from controlplane.alerts import services as alert_services
from controlplane.alerts.models import AlertChannel
from controlplane.certs import services as cert_services
from controlplane.proxy import services, validation
from controlplane.proxy.models import AccessList, Certificate, Pool, Route
from controlplane.tenancy.models import Delegation, Tenant

from . import keys
from .document import CHANNEL_FIELDS, HEALTH_CHECK, POOL_FIELDS, QUOTAS, ROUTE_FIELDS, Problem
from .plan import CREATE, DELETE, Change

WRITE_ORDER = ("tenants", "certificates", "access_lists", "pools", "routes", "alert_channels")
DELETE_ORDER = ("routes", "alert_channels", "pools", "access_lists", "certificates", "tenants")
MODELS = {"certificates": Certificate, "pools": Pool, "routes": Route, "alert_channels": AlertChannel,
          "access_lists": AccessList}
# model field → field of the file, where they differ
FILE_FIELDS = {"pool_id": "pool", "certificate_id": "certificate", "suffix": "delegations",
               "access_list_id": "access_list",
               **{f"max_{q}": f"quotas.{q}" for q in QUOTAS},
               **{model: f"health_check.{name}" for name, model in HEALTH_CHECK.items()}}


class SectionRunner:
    def __init__(self, actor, note: str, passphrase: bytes | None):
        self.actor, self.note, self.passphrase = actor, note, passphrase

    def run(self, changes: list[Change], refused=()) -> list[Problem]:
        """Problems of the services; ``refused``: (section, key) of objects already
        refused, whose dependents are not tried."""
        problems, failed = [], set(refused)
        with validation.overlap_index():  # N routes: one index, not N scans of every route
            for step, change in self.steps(changes):
                if _blocked(change, failed):
                    continue
                try:
                    with transaction.atomic():
                        step(change)
                except ValidationError as exc:
                    failed.add((change.section, change.key))
                    problems += problems_of(change, exc)
        return problems

    def steps(self, changes: list[Change]) -> list:
        writes = sorted((c for c in changes if c.action != DELETE), key=lambda c: WRITE_ORDER.index(c.section))
        deletes = sorted((c for c in changes if c.action == DELETE), key=lambda c: DELETE_ORDER.index(c.section))
        shrinking = [c for c in writes if c.section == "tenants" and _suffixes(c)[1]]
        return ([(self.write, c) for c in writes] + [(self.delete, c) for c in deletes if c.section != "tenants"]
                + [(self.drop_delegations, c) for c in shrinking]
                + [(self.delete, c) for c in deletes if c.section == "tenants"])

    # ---------------------------------------------------------- writing

    def write(self, change: Change) -> None:
        item = copy.deepcopy(change.item)
        getattr(self, f"write_{change.section}")(change, item)

    def write_tenants(self, change: Change, item: dict) -> None:
        fields = {"name": item["name"], "allowed_networks": item["allowed_networks"],
                  "rate_limit": item["rate_limit"],
                  **{f"max_{q}": item["quotas"][q] for q in QUOTAS}}
        if change.action == CREATE:
            tenant = services.create_tenant(self.actor, note=self.note, slug=item["slug"], **fields)
        else:
            tenant = Tenant.objects.get(slug=item["slug"])
            if any(f["field"] != "delegations" for f in change.fields):
                tenant = services.update_tenant(self.actor, tenant, note=self.note, **fields)
        self.each_suffix(_suffixes(change)[0],
                         lambda suffix: services.create_delegation(self.actor, tenant, suffix, note=self.note))

    def write_certificates(self, change: Change, item: dict) -> None:
        key = self.private_key(item)
        if change.action == CREATE:
            if key is None:
                raise ValidationError({"private_key_pem": [
                    "is required to create a certificate: export it with its key (--include-keys)"]})
            source = item.get("source") if item.get("source") in dict(Certificate.SOURCES) else Certificate.UPLOADED
            cert_services.upload_certificate(self.actor, tenant=owner(item), name=item["name"],
                                             certificate_pem=item["certificate_pem"], private_key_pem=key,
                                             note=self.note, source=source)
        elif change.field("certificate_pem"):
            cert_services.replace_certificate(self.actor, row(change), certificate_pem=item["certificate_pem"],
                                              private_key_pem=key, note=self.note)

    def write_pools(self, change: Change, item: dict) -> None:
        fields = {name: item[name] for name in POOL_FIELDS}
        fields.update({model: item["health_check"][name] for name, model in HEALTH_CHECK.items()})
        if change.action == CREATE:
            services.create_pool(self.actor, tenant=owner(item), name=item["name"], targets=item["targets"],
                                 note=self.note, **fields)
        else:
            targets = item["targets"] if change.field("targets") else None
            services.update_pool(self.actor, row(change), targets=targets, note=self.note, **fields)

    def write_routes(self, change: Change, item: dict) -> None:
        tenant = owner(item)
        fields = {name: item[name] for name in ROUTE_FIELDS}
        fields["pool"] = named(Pool, tenant, item["pool"], "pool")
        fields["certificate"] = named(Certificate, tenant, item["certificate"], "certificate") \
            if item["certificate"] else None
        fields["access_list"] = named(AccessList, tenant, item["access_list"], "access_list") \
            if item["access_list"] else None
        if change.action == CREATE:
            services.create_route(self.actor, tenant=tenant, name=item["name"], note=self.note, **fields)
        else:
            services.update_route(self.actor, row(change), note=self.note, **fields)

    def write_access_lists(self, change: Change, item: dict) -> None:
        fields = {"rules": item["rules"], "default": item["default"], "satisfy": item["satisfy"],
                  "users": item["users"]}  # [{username, password_hash}]: hashes stored as they are
        if change.action == CREATE:
            services.create_access_list(self.actor, tenant=owner(item), name=item["name"], note=self.note, **fields)
        else:
            services.update_access_list(self.actor, row(change), note=self.note, **fields)

    def write_alert_channels(self, change: Change, item: dict) -> None:
        if change.action == CREATE:
            channel = AlertChannel(tenant=owner(item), name=item["name"])
        else:
            channel = row(change)
        channel.kind = item["kind"]
        for name in CHANNEL_FIELDS:
            setattr(channel, name, item[name])
        alert_services.save_channel(self.actor, channel, secret=item.get("secret"), note=self.note)

    def private_key(self, item: dict) -> str | None:
        if item.get("private_key_pem") is None:
            return None
        try:
            return keys.decrypt(item["private_key_pem"], self.passphrase)
        except keys.KeyProblem as exc:
            raise ValidationError({"private_key_pem": [str(exc)]}) from None

    # ---------------------------------------------------------- deleting

    def delete(self, change: Change) -> None:
        if change.section == "tenants":
            services.delete_tenant(self.actor, Tenant.objects.get(slug=change.before["slug"]), note=self.note)
        elif change.section == "alert_channels":
            alert_services.delete_channel(self.actor, row(change), note=self.note)
        else:
            remove = {"certificates": services.delete_certificate, "pools": services.delete_pool,
                      "routes": services.delete_route, "access_lists": services.delete_access_list}[change.section]
            remove(self.actor, row(change), note=self.note)

    def drop_delegations(self, change: Change) -> None:
        tenant = Tenant.objects.get(slug=change.item["slug"])
        self.each_suffix(_suffixes(change)[1], lambda suffix: services.delete_delegation(
            self.actor, Delegation.objects.get(tenant=tenant, suffix=suffix), note=self.note))

    @staticmethod
    def each_suffix(suffixes, act) -> None:
        """``act`` on every suffix; all their problems together, each naming its suffix."""
        messages = []
        for suffix in suffixes:
            try:
                with transaction.atomic():
                    act(suffix)
            except ValidationError as exc:
                messages += [f"{suffix}: {m}" for m in exc.messages]
        if messages:
            raise ValidationError({"suffix": messages})


# ------------------------------------------------------------------ lookups

def owner(item: dict) -> Tenant | None:
    slug = item.get("tenant")
    if slug is None:
        return None
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        raise ValidationError({"tenant": [f"there is no tenant {slug} (add it under tenants)"]})
    return tenant


def named(model, tenant: Tenant | None, name: str, noun: str):
    found = model.objects.filter(tenant=tenant, name=name).order_by("pk").first()
    if found is None:
        where = f"tenant {tenant.slug}" if tenant is not None else "the platform"
        raise ValidationError({noun: [f"{where} has no {noun} named {name}"]})
    return found


def row(change: Change):
    data = change.item or change.before
    return named(MODELS[change.section], owner(data), data["name"], change.section.rstrip("s"))


def _suffixes(change: Change) -> tuple[list[str], list[str]]:
    """(added, removed) delegation suffixes of a tenant change."""
    after = (change.item or {}).get("delegations") or []
    before = (change.before or {}).get("delegations") or []
    return [s for s in after if s not in before], [s for s in before if s not in after]


def _blocked(change: Change, failed: set) -> bool:
    """Depends on a refused change (whose problem is listed already) and would only
    repeat it: an object of a tenant, or a route of a pool or certificate, that was
    refused and is not stored either."""
    if ("tenants", change.owner) in failed and not Tenant.objects.filter(slug=change.owner).exists():
        return True
    if change.section != "routes" or change.action == DELETE:
        return False
    tenant, item = change.item["tenant"], change.item
    return any((section, (tenant, item[name])) in failed and not _stored(model, tenant, item[name])
               for section, model, name in (("pools", Pool, "pool"), ("certificates", Certificate, "certificate"),
                                            ("access_lists", AccessList, "access_list"))
               if item.get(name))


def _stored(model, slug: str | None, name: str) -> bool:
    rows = model.objects.filter(tenant__slug=slug) if slug else model.objects.filter(tenant__isnull=True)
    return rows.filter(name=name).exists()


def problems_of(change: Change, exc: ValidationError) -> list[Problem]:
    """A service's refusal as problems at the object's place in the file, by field."""
    if not hasattr(exc, "error_dict"):
        return [Problem(change.path, change.label, message) for message in exc.messages]
    out = []
    for name, messages in exc.message_dict.items():
        path = change.path
        if name != NON_FIELD_ERRORS:
            name = FILE_FIELDS.get(name, name)
            path = f"{path}.{name}" if path else name
        out += [Problem(path, change.label, message) for message in messages]
    return out
