"""Who may see and change what: the one tenant-scoping helper.

Used by the dashboard and meant for the REST API too, so both apply the same rules:

- platform staff (``is_staff`` or ``is_superuser``) see and manage everything;
- a tenant member sees only the objects of the tenants they belong to (never
  platform-owned ones);
- roles: ``viewer`` reads, ``editor`` also changes routes, pools, certificates
  (and alert channels), ``owner`` also manages members and API tokens;
- asking for an object outside one's scope is a 404, never a 403, so ids of other
  tenants' objects are not even confirmed to exist.

A ``Principal`` can also stand for an API token bound to one tenant and role
(``Principal.for_token``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from django.http import Http404

from .models import Membership, Tenant

ROLE_RANK = {Membership.VIEWER: 1, Membership.EDITOR: 2, Membership.OWNER: 3}
STAFF = "staff"


def is_staff(user) -> bool:
    return bool(user is not None and getattr(user, "is_authenticated", False) and user.is_active
                and (user.is_staff or user.is_superuser))


@dataclass
class Principal:
    """A user (or token) with its roles: ``roles`` maps tenant id → role."""
    user: object = None
    staff: bool = False
    roles: dict[int, str] = field(default_factory=dict)

    @classmethod
    def for_user(cls, user) -> "Principal":
        if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
            return cls(user=user)
        if is_staff(user):
            return cls(user=user, staff=True)
        roles = dict(Membership.objects.filter(user=user).values_list("tenant_id", "role"))
        return cls(user=user, roles=roles)

    @classmethod
    def for_token(cls, token) -> "Principal":
        """An ``ApiToken``: a tenant token acts with its role in that tenant only
        (capped by the user's own membership unless the user is staff); a user token
        acts as the user."""
        user = token.user
        if token.tenant_id is None:
            return cls.for_user(user)
        if is_staff(user):
            return cls(user=user, roles={token.tenant_id: token.role or Membership.VIEWER})
        member = Membership.objects.filter(user=user, tenant_id=token.tenant_id).values_list("role", flat=True).first()
        if member is None:
            return cls(user=user)
        role = token.role or member
        if ROLE_RANK.get(role, 0) > ROLE_RANK.get(member, 0):
            role = member
        return cls(user=user, roles={token.tenant_id: role})

    # -------------------------------------------------------------- reading

    @property
    def tenant_ids(self) -> set[int]:
        return set(self.roles)

    def tenants(self):
        """The tenants this principal may see."""
        qs = Tenant.objects.all()
        return qs if self.staff else qs.filter(id__in=self.tenant_ids)

    def scope(self, queryset, field_name: str = "tenant"):
        """``queryset`` limited to what this principal may see; ``field_name`` is the
        lookup of the owning tenant (e.g. ``pool__tenant`` for targets)."""
        if self.staff:
            return queryset
        return queryset.filter(**{f"{field_name}__in": list(self.tenant_ids)})

    def get_or_404(self, queryset, field_name: str = "tenant", **lookup):
        try:
            return self.scope(queryset, field_name).get(**lookup)
        except (queryset.model.DoesNotExist, ValueError, TypeError):
            raise Http404("not found") from None

    def role(self, tenant) -> str | None:
        """``staff``, ``owner``, ``editor``, ``viewer`` or None for ``tenant`` (an object,
        an id or None for the platform)."""
        if self.staff:
            return STAFF
        tenant_id = getattr(tenant, "pk", tenant)
        return self.roles.get(tenant_id) if tenant_id is not None else None

    def can_view(self, tenant) -> bool:
        return self.role(tenant) is not None

    def can_edit(self, tenant) -> bool:
        """Change routes, pools, certificates and alert channels of ``tenant``."""
        role = self.role(tenant)
        return role == STAFF or ROLE_RANK.get(role, 0) >= ROLE_RANK[Membership.EDITOR]

    def can_manage(self, tenant) -> bool:
        """Manage members and API tokens of ``tenant``."""
        role = self.role(tenant)
        return role == STAFF or role == Membership.OWNER

    @property
    def can_edit_any(self) -> bool:
        return self.staff or any(ROLE_RANK.get(r, 0) >= ROLE_RANK[Membership.EDITOR] for r in self.roles.values())

    def editable_tenants(self):
        if self.staff:
            return Tenant.objects.all()
        ids = [t for t, r in self.roles.items() if ROLE_RANK.get(r, 0) >= ROLE_RANK[Membership.EDITOR]]
        return Tenant.objects.filter(id__in=ids)


def principal(request_or_user) -> Principal:
    """The principal of a request (cached on it) or of a user."""
    request = request_or_user if hasattr(request_or_user, "META") else None
    if request is not None:
        cached = getattr(request, "_switchyard_principal", None)
        if cached is None:
            cached = Principal.for_user(getattr(request, "user", None))
            request._switchyard_principal = cached
        return cached
    return Principal.for_user(request_or_user)


def scope(queryset, user, field_name: str = "tenant"):
    """Shortcut: ``principal(user).scope(queryset, field_name)``."""
    return principal(user).scope(queryset, field_name)
