"""What every dashboard view module needs: access checks, paging, the change note,
safe return URLs."""
from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404
from django.utils.http import url_has_allowed_host_and_scheme

from controlplane.tenancy.models import Tenant

PAGE_SIZE = 50


def page(request, queryset, size=PAGE_SIZE):
    return Paginator(queryset, size).get_page(request.GET.get("page"))


def note(request) -> str:
    return (request.POST.get("note") or "").strip()[:2000]


def require_edit(p, tenant):
    if not p.can_edit(tenant):
        raise PermissionDenied("your role in this tenant is read-only")


def require_staff(p):
    if not p.staff:
        raise PermissionDenied("platform staff only")


def require_manage(p, tenant):
    if not p.can_manage(tenant):
        raise PermissionDenied("only the tenant's owners manage members and tokens")


def staff_or_404(p):
    if not p.staff:
        raise Http404("not found")


def object_for_edit(p, queryset, pk):
    """The object an edit form changes (404 outside the user's scope, 403 without the
    role), or None for a new one (403 when the user may create nothing)."""
    obj = p.get_or_404(queryset, id=pk) if pk else None
    if obj is not None:
        require_edit(p, obj.tenant_id)
    elif not p.can_edit_any:
        raise PermissionDenied("your role is read-only")
    return obj


def tenant_for(p, slug) -> Tenant:
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None or not p.can_view(tenant):
        raise Http404("not found")
    return tenant


def return_url(request, url: str | None, fallback: str) -> str:
    """``url`` (a ``next`` or ``back`` parameter) when it stays on this site, else ``fallback``:
    no other host, no ``javascript:`` or other scheme."""
    if url and url_has_allowed_host_and_scheme(url, {request.get_host()}, require_https=request.is_secure()):
        return url
    return fallback
