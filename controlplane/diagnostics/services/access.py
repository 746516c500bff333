"""Who may use which diagnostic on what, and the errors that say no.

Platform staff see everything, a tenant member only its tenants' routes, targets and
certificates; anything else is ``Http404``. Nodes are platform objects: their status
is for staff; a tenant may still name a node to use for its own routes.
"""
from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.http import Http404

from controlplane.proxy.models import Route
from controlplane.publishing.models import Node
from controlplane.tenancy.access import ROLE_RANK, Principal
from controlplane.tenancy.models import Membership


class Conflict(Exception):
    """The request cannot be served now (node not connected): HTTP 409 / 503."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


class Forbidden(Exception):
    """Visible, but the role is too low: HTTP 403."""


def routes_for(p: Principal):
    qs = Route.objects.select_related("tenant", "pool")
    return qs if p.staff else qs.filter(tenant_id__in=list(p.tenant_ids))


def route_or_404(p: Principal, pk: Any) -> Route:
    return p.get_or_404(Route.objects.select_related("tenant", "pool"), pk=int_or_404(pk))


def int_or_404(value: Any) -> int:
    try:
        n = int(value)
        if not 0 < n < 2 ** 31:
            raise ValueError
        return n
    except (TypeError, ValueError):
        raise Http404("not found") from None


def node_or_404(p: Principal, ref: Any, staff_only: bool = False) -> Node:
    """A node by id or name. Status is staff-only; others may only name a node to use."""
    if staff_only and not p.staff:
        raise Http404("not found")
    if p.user is None or not getattr(p.user, "is_authenticated", False):
        raise Http404("not found")
    qs = Node.objects.filter(revoked=False)
    node = None
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        node = qs.filter(pk=int(ref)).first()
    if node is None and isinstance(ref, str):
        node = qs.filter(name=ref).first()
    if node is None:
        raise Http404("no such node")
    return node


def require_level(p: Principal, tenant, level: str) -> None:
    """``view`` or ``edit`` on ``tenant`` (None: platform objects, staff only)."""
    if p.staff:
        return
    role = p.role(tenant) if tenant is not None else None
    need = ROLE_RANK[Membership.EDITOR] if level == "edit" else ROLE_RANK[Membership.VIEWER]
    if ROLE_RANK.get(role, 0) < need:
        raise Forbidden("needs the editor or owner role in this tenant" if level == "edit"
                        else "not a member of this tenant")


def bounded(value, default, lo, hi, field, kind=int):
    """``value`` as a ``kind`` (int or float) within [lo, hi]; ``default`` when empty."""
    if value in (None, ""):
        return default
    try:
        n = kind(value)
    except (TypeError, ValueError):
        raise ValidationError({field: ["must be an integer" if kind is int else "must be a number"]}) from None
    if not lo <= n <= hi:
        raise ValidationError({field: [f"must be between {lo} and {hi}"]})
    return n
