"""Users (platform staff), invitations (tenant owners) and the pages a person reaches
from an e-mail link: accepting an invitation and setting a new password. Every
change goes through ``controlplane.accounts.services``, as the API's does."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model, login as auth_login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from controlplane.accounts import services as accounts, sso
from controlplane.accounts.models import Invitation
from controlplane.accounts import twofactor
from controlplane.audit.services import Actor
from controlplane.tenancy.access import principal as get_principal

from ..accountforms import AcceptForm, InviteForm, UserEditForm, UserForm
from ..errors import flash_validation_errors
from .common import note, page, require_manage, staff_or_404, tenant_for
from .flows import attempt
from .tenants import tenant_page

User = get_user_model()
BACKEND = "controlplane.dashboard.throttle.ThrottledModelBackend"


def base_url(request) -> str:
    return request.build_absolute_uri("/")


# ------------------------------------------------------------------ users (staff)

def _user_or_404(pk):
    user = User.objects.filter(pk=pk).first()
    if user is None:
        raise Http404("not found")
    return user


@login_required
def user_list(request):
    staff_or_404(get_principal(request))
    form = UserForm(request.POST or None)
    if not sso.local_passwords():
        del form.fields["password"]  # SWITCHYARD_LOCAL_PASSWORDS=off: new users sign in with SSO
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        ok, user = attempt(form, lambda: accounts.create_user(
            Actor.from_request(request), data["username"], email=data["email"], password=data.get("password", ""),
            is_staff=data["is_staff"], note=note(request)))
        if ok:
            later = (f" They sign in with {sso.display_name()}." if not sso.local_passwords()
                     else " Send a password reset link so they set a password.")
            messages.success(request, f"User {user.get_username()} created."
                             + ("" if data.get("password") else later))
            return redirect("dashboard:user", pk=user.pk)
    return render(request, "dashboard/users/list.html", {"users": page(request, accounts.users()), "form": form})


@login_required
def user_detail(request, pk):
    staff_or_404(get_principal(request))
    user = _user_or_404(pk)
    form = UserEditForm(request.POST or None, initial={"email": user.email, "is_staff": user.is_staff})
    if request.method == "POST" and form.is_valid():
        ok, _ = attempt(form, lambda: accounts.update_user(
            Actor.from_request(request), user, email=form.cleaned_data["email"],
            is_staff=form.cleaned_data["is_staff"], note=note(request)))
        if ok:
            messages.success(request, f"{user.get_username()} saved.")
            return redirect("dashboard:user", pk=user.pk)
    memberships = user.memberships.select_related("tenant").order_by("tenant__slug")
    tokens = user.api_tokens.filter(revoked__isnull=True).select_related("tenant").order_by("-created")
    return render(request, "dashboard/users/detail.html", {
        "subject": user, "form": form, "memberships": memberships, "tokens": tokens,
        "myself": user.pk == request.user.pk,
        "two_factor": twofactor.summary(user),
        "sso": {"enabled": sso.enabled(), "name": sso.display_name(), "linked": user.socialaccount_set.exists(),
                "password_allowed": sso.password_allowed(user.get_username())}})


def _flash_call(request, call) -> bool:
    try:
        call()
    except ValidationError as exc:
        flash_validation_errors(request, exc)
        return False
    return True


@login_required
@require_POST
def user_active(request, pk):
    staff_or_404(get_principal(request))
    user = _user_or_404(pk)
    active = request.POST.get("active") == "1"
    if _flash_call(request, lambda: accounts.set_active(Actor.from_request(request), user, active,
                                                        note=note(request))):
        messages.success(request, f"{user.get_username()} is {'active' if active else 'deactivated'}."
                         + ("" if active else " Their sessions and API tokens no longer work."))
    return redirect("dashboard:user", pk=user.pk)


@login_required
@require_POST
def user_reset(request, pk):
    staff_or_404(get_principal(request))
    user = _user_or_404(pk)
    result = {}

    def call():
        result["error"] = accounts.send_password_reset(Actor.from_request(request), user, base_url(request),
                                                       note=note(request))
    if _flash_call(request, call):
        if result["error"]:
            messages.error(request, f"The e-mail to {user.email} could not be sent: {result['error']}")
        else:
            messages.success(request, f"A password reset link was sent to {user.email}.")
    return redirect("dashboard:user", pk=user.pk)


@login_required
@require_POST
def user_delete(request, pk):
    staff_or_404(get_principal(request))
    user = _user_or_404(pk)
    name = user.get_username()
    if _flash_call(request, lambda: accounts.delete_user(Actor.from_request(request), user, note=note(request))):
        messages.success(request, f"User {name} deleted.")
        return redirect("dashboard:users")
    return redirect("dashboard:user", pk=pk)


# ------------------------------------------------------------------ invitations (owners)

@login_required
@require_POST
def invitation_create(request, slug):
    p = get_principal(request)
    tenant = tenant_for(p, slug)
    require_manage(p, tenant)
    form = InviteForm(request.POST)
    if form.is_valid():
        ok, result = attempt(form, lambda: accounts.invite(
            Actor.from_request(request), tenant, form.cleaned_data["email"], form.cleaned_data["role"],
            base_url(request), note=note(request)))
        if ok:
            inv, link, error = result
            request.session["invitation_link"] = {"email": inv.email, "link": link, "error": error}
            return redirect("dashboard:tenant", slug=slug)
    return tenant_page(request, tenant, invite_form=form)


@login_required
@require_POST
def invitation_revoke(request, slug, pk):
    p = get_principal(request)
    tenant = tenant_for(p, slug)
    require_manage(p, tenant)
    inv = Invitation.objects.filter(tenant=tenant, pk=pk).first()
    if inv is None:
        raise Http404("not found")
    if _flash_call(request, lambda: accounts.revoke_invitation(Actor.from_request(request), inv,
                                                               note=note(request))):
        messages.success(request, f"The invitation of {inv.email} is revoked: its link no longer works.")
    return redirect("dashboard:tenant", slug=slug)


GONE = {
    Invitation.EXPIRED: "This invitation has expired. Ask the tenant's owner for a new one.",
    Invitation.REVOKED: "This invitation was revoked by the tenant's owner.",
    Invitation.ACCEPTED: "This invitation was already used. Sign in instead.",
}


@sensitive_post_parameters("password", "password2")
@never_cache
def invitation_accept(request, token):
    """The page the e-mailed link opens: set a password for a new account, or (signed
    in) join with the current one. Expired, revoked and used links answer 410."""
    inv = accounts.invitation_for(token)
    if inv is None:
        raise Http404("not found")
    if inv.status != Invitation.PENDING:
        return render(request, "dashboard/invitations/gone.html", {"message": GONE[inv.status], "inv": inv},
                      status=410)
    address = request.META.get("REMOTE_ADDR")
    context = {"inv": inv, "token": token,
               "sso": {"enabled": sso.enabled(), "name": sso.display_name(), "local_passwords": sso.local_passwords()}}
    if request.user.is_authenticated:
        if request.method == "POST":
            try:
                accounts.accept_as(inv, request.user, source_address=address)
            except accounts.Gone as gone:
                return render(request, "dashboard/invitations/gone.html", {"message": GONE[gone.reason]},
                              status=410)
            messages.success(request, f"You are now a member of {inv.tenant.slug}.")
            return redirect("dashboard:tenant", slug=inv.tenant.slug)
        return render(request, "dashboard/invitations/accept.html", context)
    existing = accounts.account_for(inv)
    if existing is not None:
        context["sign_in"] = f"{reverse('dashboard:login')}?next={reverse('dashboard:invitation', args=[token])}"
        return render(request, "dashboard/invitations/accept.html", context)
    if not sso.local_passwords():
        return render(request, "dashboard/invitations/accept.html", context)  # SSO only: no password to set
    form = AcceptForm(request.POST or None, initial={"username": inv.email.split("@")[0][:150]})
    if request.method == "POST" and form.is_valid():
        try:
            ok, user = attempt(form, lambda: accounts.accept_with_new_account(
                inv, form.cleaned_data["username"], form.cleaned_data["password"], source_address=address))
        except accounts.Gone as gone:
            return render(request, "dashboard/invitations/gone.html", {"message": GONE[gone.reason]}, status=410)
        if ok:
            auth_login(request, user, backend=BACKEND)
            messages.success(request, f"Welcome, {user.get_username()}: you are now a member of {inv.tenant.slug}.")
            return redirect("dashboard:tenant", slug=inv.tenant.slug)
    context["form"] = form
    return render(request, "dashboard/invitations/accept.html", context)


# ------------------------------------------------------------------ password reset (from the e-mailed link)

class PasswordResetConfirm(auth_views.PasswordResetConfirmView):
    template_name = "dashboard/users/password_reset.html"
    success_url = reverse_lazy("dashboard:password_reset_done")

    def get_user(self, uidb64):
        user = super().get_user(uidb64)
        # SWITCHYARD_LOCAL_PASSWORDS=off: a link (even one sent before) sets no password
        return user if user is None or sso.password_allowed(user.get_username()) else None


class PasswordResetDone(auth_views.PasswordResetCompleteView):
    template_name = "dashboard/users/password_reset_done.html"
