"""Who may see and change what through the API — the same rules as the dashboard.

Everything goes through ``controlplane.tenancy.access.Principal``:

- ``principal_for(request)``: the principal of a request — a per-tenant API token
  acts as that tenant with the token's role, a per-user token and a session act with
  the user's memberships, platform staff with everything;
- ``scope_queryset(request, queryset, field)``: THE queryset-scoping helper every
  viewset's ``get_queryset`` goes through, so that another tenant's object by id is a
  404 and lists show only one's own tenants' objects (never platform-owned ones);
- ``require(request, tenant, level)``: the role check for a write, 403 when the
  object is visible but the role is too low.

Levels: ``view`` (any member), ``edit`` (editor or owner: routes, pools,
certificates, alert channels), ``manage`` (owner: members, API tokens),
``staff`` (platform staff only: tenants, delegations, nodes, versions).
"""
from __future__ import annotations

from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

from controlplane.tenancy.access import ROLE_RANK, Principal
from controlplane.tenancy.models import ApiToken, Membership

VIEW, EDIT, MANAGE, STAFF = "view", "edit", "manage", "staff"
LEVEL_RANK = {VIEW: ROLE_RANK[Membership.VIEWER], EDIT: ROLE_RANK[Membership.EDITOR],
              MANAGE: ROLE_RANK[Membership.OWNER]}
MESSAGES = {EDIT: "needs the editor or owner role in tenant {}", MANAGE: "needs the owner role in tenant {}",
            STAFF: "only platform staff may do this", VIEW: "not a member of tenant {}"}


def principal_for(request) -> Principal:
    cached = getattr(request, "_switchyard_api_principal", None)
    if cached is None:
        token = getattr(request, "auth", None)
        if isinstance(token, ApiToken):
            cached = Principal.for_token(token)
        else:
            cached = Principal.for_user(getattr(request, "user", None))
        request._switchyard_api_principal = cached
    return cached


def tenant_ids_at(principal: Principal, level: str) -> list[int]:
    rank = LEVEL_RANK.get(level, 99)
    return [t for t, role in principal.roles.items() if ROLE_RANK.get(role, 0) >= rank]


def scope_queryset(request, queryset, field: str | None = "tenant", level: str = VIEW):
    """``queryset`` limited to what the request's principal may see (at ``level``).
    ``field`` is the lookup of the owning tenant; None marks platform objects, which
    only staff see."""
    principal = principal_for(request)
    if principal.staff:
        return queryset
    if field is None or level == STAFF:
        return queryset.none()
    return queryset.filter(**{f"{field}__in": tenant_ids_at(principal, level)})


def allowed(request, tenant, level: str) -> bool:
    principal = principal_for(request)
    if principal.staff:
        return True
    if level == STAFF or tenant is None:
        return False
    role = principal.role(tenant)
    return ROLE_RANK.get(role, 0) >= LEVEL_RANK[level]


def require(request, tenant, level: str) -> None:
    """403 unless the principal may act at ``level`` on ``tenant`` (None: the platform)."""
    if not allowed(request, tenant, level):
        label = getattr(tenant, "slug", None)
        message = MESSAGES[STAFF] if label is None else MESSAGES[level].format(label)
        raise PermissionDenied(message)


def can_write_somewhere(request, level: str) -> bool:
    principal = principal_for(request)
    return principal.staff or (level != STAFF and bool(tenant_ids_at(principal, level)))


class IsAuthenticatedMember(BasePermission):
    """Any authenticated user or token; creating needs the write level somewhere
    (a viewer gets 403 at once). Object checks come from ``require`` in the views
    after the scoped lookup, so an object outside one's scope is always a 404."""

    def has_permission(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return False
        if getattr(view, "action", None) == "create":
            level = getattr(view, "create_level", None) or getattr(view, "write_level", EDIT)
            if not can_write_somewhere(request, level):
                raise PermissionDenied(MESSAGES[STAFF] if level == STAFF else "your role may not create this")
        return True
