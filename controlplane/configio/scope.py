"""Whose file it is, and who may make each of its changes.

A platform file (no ``tenant``) describes everything and is platform staff's; a
tenant's file holds that tenant's objects only. Each change needs the role the same
change needs through the API: tenants and delegations, and platform-owned objects,
need platform staff; a tenant's certificates, pools, routes and alert channels need
its editor or owner role. A tenant the principal cannot see is reported as unknown,
so a file learns nothing of other tenants.
"""
from __future__ import annotations

from dataclasses import dataclass

from controlplane.tenancy.access import Principal
from controlplane.tenancy.models import Tenant

from .document import Problem
from .plan import DELETE, Change


class ScopeError(ValueError):
    pass


@dataclass(frozen=True)
class Scope:
    principal: Principal
    tenant: Tenant | None = None    # None: the whole platform

    @property
    def slug(self) -> str | None:
        return self.tenant.slug if self.tenant is not None else None

    @property
    def label(self) -> str:
        return f"tenant {self.slug}" if self.tenant is not None else "the platform"


def resolve(principal: Principal, requested: str | None = None, in_file: str | None = None) -> Scope:
    """The scope from the tenant asked for (command line, query) and the file's own."""
    if requested and in_file and requested != in_file:
        raise ScopeError(f"the file is tenant {in_file}'s, not tenant {requested}'s")
    slug = requested or in_file
    if slug:
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None or not principal.can_view(tenant):
            raise ScopeError(f"there is no tenant {slug}")
        return Scope(principal, tenant)
    if principal.staff:
        return Scope(principal)
    if len(principal.tenant_ids) == 1:
        return Scope(principal, Tenant.objects.get(pk=next(iter(principal.tenant_ids))))
    raise ScopeError("name the tenant (the slug of one of your tenants): the whole platform is staff's only")


def refusals(scope: Scope, changes: list[Change]) -> list[tuple[Change, Problem]]:
    """The changes the principal may not make, each with why."""
    tenant_ids = dict(Tenant.objects.values_list("slug", "id"))
    out = []
    for change in changes:
        message = _refusal(scope, change, tenant_ids)
        if message:
            out.append((change, Problem(change.path, change.label, message)))
    return out


def _refusal(scope: Scope, change: Change, tenant_ids: dict) -> str | None:
    owner = change.owner
    if scope.tenant is not None and owner != scope.slug:
        where = f"tenant {owner}" if owner else "the platform"
        return f"belongs to {where}, outside this file's scope ({scope.label})"
    if change.section == "tenants":
        if scope.tenant is not None and change.action == DELETE:
            return "a tenant's file cannot delete its own tenant"
        return None if scope.principal.staff else "only platform staff may change tenants and delegations"
    if owner is None:
        return None if scope.principal.staff else "only platform staff may change platform-owned objects"
    if scope.principal.can_edit(tenant_ids.get(owner)):
        return None
    return f"needs the editor or owner role in tenant {owner}"


def dashboard_tenants(principal: Principal):
    """The tenants whose file the dashboard's Config page offers: every tenant to platform
    staff (who also get the whole platform), a tenant's own to its owners."""
    if principal.staff:
        return Tenant.objects.order_by("slug")
    return Tenant.objects.filter(id__in=[t for t in principal.tenant_ids if principal.can_manage(t)]).order_by("slug")


def may_use_dashboard(principal: Principal) -> bool:
    return principal.staff or any(principal.can_manage(t) for t in principal.tenant_ids)
