"""Sign-in and sign-out. With two-factor on (``controlplane.accounts.twofactor``) the
password step only remembers who passed it; ``login_code`` asks for a TOTP or recovery
code and signs in. Both steps go through the login throttle: a wrong code counts as a
failed sign-in for that username and address, and a blocked username gets 429 at
either step."""
from __future__ import annotations

import time

from django.contrib import messages
from django.contrib.auth import get_user_model, login as auth_login, logout as auth_logout
from django.contrib.auth.signals import user_login_failed
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from controlplane.accounts import sso, twofactor

from .. import forms, throttle
from .common import return_url

PENDING = "_switchyard_2fa_pending"   # session: who passed the password step, waiting for a code
PENDING_SECONDS = 300


@sensitive_post_parameters("password")
@csrf_protect
@never_cache
@throttle.with_throttle_status
def login_view(request):
    next_url = return_url(request, request.POST.get("next") or request.GET.get("next"), "")
    if request.user.is_authenticated and request.method == "GET":
        return redirect(next_url or "dashboard:overview")
    form = forms.LoginForm(request, data=request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.get_user()
        if twofactor.is_enabled(user):
            request.session[PENDING] = {"user": user.pk, "backend": user.backend, "next": next_url,
                                        "at": time.time()}
            return redirect("dashboard:login_code")
        auth_login(request, user)
        return redirect(next_url or "dashboard:overview")
    return login_page(request, form, next_url)


def login_page(request, form=None, next_url: str = "", error: str = "", status: int = 200):
    """The sign-in page: the password form, and "Sign in with <name>" when single sign-on
    is configured (``error``: why an SSO sign-in was refused)."""
    return render(request, "dashboard/login.html", {
        "form": form or forms.LoginForm(request), "next": next_url, "sso_error": error,
        "sso": {"enabled": sso.enabled(), "name": sso.display_name(), "local_passwords": sso.local_passwords()},
    }, status=status)


def _pending_user(request):
    pending = request.session.get(PENDING)
    if not pending or time.time() - pending.get("at", 0) > PENDING_SECONDS:
        request.session.pop(PENDING, None)
        return None, None
    user = get_user_model().objects.filter(pk=pending["user"], is_active=True).first()
    return user, pending


@sensitive_post_parameters("code")
@csrf_protect
@never_cache
@throttle.with_throttle_status
def login_code(request):
    """The second step: a code from the authenticator app, or a recovery code."""
    user, pending = _pending_user(request)
    if user is None:
        messages.error(request, "Your sign-in took too long or was not started here. Sign in again.")
        return redirect("dashboard:login")
    error = ""
    if request.method == "POST":
        address = throttle.client_address(request)
        if throttle.is_blocked(user.get_username(), address):
            setattr(request, throttle.THROTTLED, True)
            error = throttle.refusal_message()
        elif twofactor.verify(user, request.POST.get("code", "")):
            request.session.pop(PENDING, None)
            auth_login(request, user, backend=pending["backend"])
            return redirect(pending.get("next") or "dashboard:overview")
        else:
            user_login_failed.send(sender=__name__, credentials={"username": user.get_username()},
                                   request=request)
            error = "This code is not valid. Enter the current code from your app, or a recovery code."
    return render(request, "dashboard/login_code.html", {"error": error, "keys": twofactor.has_keys(user),
                                                         "totp": twofactor.has_totp(user)})


@require_POST
def logout_view(request):
    auth_logout(request)
    return redirect("dashboard:login")
