"""Tenants and their delegated hostname suffixes (platform staff); the tenant page
also shows members and tokens (see ``members``)."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from controlplane.accounts.services import invitations_of
from controlplane.audit.services import Actor
from controlplane.proxy import services
from controlplane.proxy.models import Certificate, Pool, Route, Target
from controlplane.tenancy.access import principal as get_principal
from controlplane.tenancy.models import Delegation, Membership, Tenant

from .. import forms
from ..accountforms import InviteForm
from .common import note, require_staff, staff_or_404, tenant_for
from .flows import attempt, refused
from . import on_demand


@login_required
def tenant_list(request):
    staff_or_404(get_principal(request))
    tenants = Tenant.objects.annotate(n_delegations=Count("delegations", distinct=True),
                                      n_members=Count("memberships", distinct=True)).order_by("slug")
    return render(request, "dashboard/tenants/list.html", {"tenants": tenants})


@login_required
def tenant_new(request):
    staff_or_404(get_principal(request))
    form = forms.TenantForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        ok, tenant = attempt(form, lambda: services.create_tenant(Actor.from_request(request), note=note(request),
                                                                  **form.service_fields()))
        if ok:
            messages.success(request, f"Tenant {tenant.slug} created. Delegate it a hostname suffix next.")
            return redirect("dashboard:tenant", slug=tenant.slug)
    return render(request, "dashboard/tenants/form.html", {"form": form})


def _usage(tenant) -> dict:
    return {"routes": Route.objects.filter(tenant=tenant).count(),
            "pools": Pool.objects.filter(tenant=tenant).count(),
            "targets": Target.objects.filter(pool__tenant=tenant).count(),
            "certificates": Certificate.objects.filter(tenant=tenant).count()}


def tenant_page(request, tenant, *, member_form=None, token_form=None, invite_form=None):
    """The tenant page; a member or token form that the service refused is shown
    again with its errors."""
    p = get_principal(request)
    return render(request, "dashboard/tenants/detail.html", {
        "tenant": tenant, "form": forms.TenantForm(instance=tenant) if p.staff else None,
        "delegation_form": forms.DelegationForm(), "delegations": tenant.delegations.all(),
        "members": tenant.memberships.select_related("user").order_by("user__username"),
        "tokens": tenant.api_tokens.select_related("user").order_by("-created"),
        "roles": Membership.ROLES,
        "member_form": member_form or forms.MemberForm(), "token_form": token_form or forms.TokenForm(),
        "can_manage": p.can_manage(tenant), "staff": p.staff,
        "issued": request.session.pop("issued_token", None), "usage": _usage(tenant),
        **_invitations(request, tenant, p, invite_form),
        **on_demand.panel(tenant),
    })


def _invitations(request, tenant, p, invite_form) -> dict:
    """The tenant page's invitations panel (owners and staff only)."""
    if not p.can_manage(tenant):
        return {}
    return {"invitations": invitations_of(tenant)[:50], "invite_form": invite_form or InviteForm(),
            "invitation_link": request.session.pop("invitation_link", None)}


@login_required
def tenant_detail(request, slug):
    return tenant_page(request, tenant_for(get_principal(request), slug))


@login_required
@require_POST
def tenant_update(request, slug):
    p = get_principal(request)
    tenant = tenant_for(p, slug)
    require_staff(p)
    form = forms.TenantForm(request.POST, instance=tenant)
    if form.is_valid():
        ok, _ = attempt(form, lambda: services.update_tenant(
            Actor.from_request(request), Tenant.objects.get(pk=tenant.pk), note=note(request),
            if_match=form.if_match, **form.service_fields()), obj=tenant, kind="tenant")
        if ok:
            messages.success(request, f"Tenant {tenant.slug} saved.")
            return redirect("dashboard:tenant", slug=tenant.slug)
    return render(request, "dashboard/tenants/form.html", {"form": form, "tenant": tenant})


@login_required
@require_POST
def tenant_delete(request, slug):
    p = get_principal(request)
    tenant = tenant_for(p, slug)
    require_staff(p)
    if refused(request, lambda: services.delete_tenant(Actor.from_request(request), tenant, note=note(request),
                                                        if_match=request.POST.get("etag") or None),
               "tenant", "delete"):
        return redirect("dashboard:tenant", slug=slug)
    messages.success(request, f"Tenant {slug} deleted.")
    return redirect("dashboard:tenants")


@login_required
@require_POST
def delegation_add(request, slug):
    p = get_principal(request)
    tenant = tenant_for(p, slug)
    require_staff(p)
    form = forms.DelegationForm(request.POST)
    if form.is_valid():
        suffix = form.cleaned_data.get("suffix") or ""
        if not refused(request, lambda: services.create_delegation(Actor.from_request(request), tenant, suffix,
                                                                   note=note(request)), "delegation", "save"):
            messages.success(request, f"Delegated {suffix} to {slug}.")
    return redirect("dashboard:tenant", slug=slug)


@login_required
@require_POST
def delegation_delete(request, pk):
    staff_or_404(get_principal(request))
    delegation = Delegation.objects.filter(pk=pk).select_related("tenant").first()
    if delegation is None:
        raise Http404("not found")
    slug, suffix = delegation.tenant.slug, delegation.suffix
    if not refused(request, lambda: services.delete_delegation(Actor.from_request(request), delegation,
                                                               note=note(request),
                                                               if_match=request.POST.get("etag") or None),
                   "delegation", "delete"):
        messages.success(request, f"Delegation {suffix} removed.")
    return redirect("dashboard:tenant", slug=slug)
