"""A tenant's members and API tokens, managed by its owners (and platform staff)
through the same services as the API."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from controlplane.audit.services import Actor
from controlplane.tenancy import services
from controlplane.tenancy.access import principal as get_principal
from controlplane.tenancy.models import ApiToken, Membership

from .. import forms
from .common import note, require_manage, tenant_for
from .flows import attempt, refused
from .tenants import tenant_page


def _managed_tenant(request, slug):
    p = get_principal(request)
    tenant = tenant_for(p, slug)
    require_manage(p, tenant)
    return tenant


def _member_or_404(tenant, pk) -> Membership:
    member = Membership.objects.filter(tenant=tenant, pk=pk).select_related("user", "tenant").first()
    if member is None:
        raise Http404("not found")
    return member


@login_required
@require_POST
def member_add(request, slug):
    tenant = _managed_tenant(request, slug)
    form = forms.MemberForm(request.POST)
    if form.is_valid():
        ok, member = attempt(form, lambda: services.add_member(
            Actor.from_request(request), tenant, form.cleaned_data["username"], form.cleaned_data["role"],
            note=note(request)))
        if ok:
            messages.success(request, f"{member.user} is {member.role} of {slug}.")
            return redirect("dashboard:tenant", slug=slug)
    return tenant_page(request, tenant, member_form=form)


@login_required
@require_POST
def member_change(request, slug, pk):
    tenant = _managed_tenant(request, slug)
    member = _member_or_404(tenant, pk)
    form = forms.MemberRoleForm(request.POST)
    if form.is_valid() and not refused(request, lambda: services.change_member(
            Actor.from_request(request), member, form.cleaned_data["role"], note=note(request)), "member", "save"):
        messages.success(request, f"{member.user} is {member.role} of {slug}.")
    return redirect("dashboard:tenant", slug=slug)


@login_required
@require_POST
def member_remove(request, slug, pk):
    tenant = _managed_tenant(request, slug)
    member = _member_or_404(tenant, pk)
    services.remove_member(Actor.from_request(request), member, note=note(request))
    messages.success(request, f"{member.user} is no longer a member of {slug}.")
    return redirect("dashboard:tenant", slug=slug)


@login_required
@require_POST
def token_issue(request, slug):
    tenant = _managed_tenant(request, slug)
    form = forms.TokenForm(request.POST)
    if form.is_valid():
        ok, issued = attempt(form, lambda: services.issue_token(
            Actor.from_request(request), request.user, tenant=tenant, role=form.cleaned_data["role"],
            name=form.cleaned_data.get("name") or "", note=note(request)))
        if ok:
            row, plain = issued
            request.session["issued_token"] = {"prefix": row.prefix, "token": plain}
            return redirect("dashboard:tenant", slug=slug)
    return tenant_page(request, tenant, token_form=form)


@login_required
@require_POST
def token_revoke(request, slug, pk):
    tenant = _managed_tenant(request, slug)
    token = ApiToken.objects.filter(tenant=tenant, pk=pk).select_related("tenant").first()
    if token is None:
        raise Http404("not found")
    services.revoke_token(Actor.from_request(request), token, note=note(request))
    messages.success(request, f"Token {token.prefix}… revoked.")
    return redirect("dashboard:tenant", slug=slug)
