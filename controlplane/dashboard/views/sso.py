"""Sign-in with single sign-on (OpenID Connect). ``sso_start`` sends the browser to the
provider (allauth builds the request: state, nonce, PKCE); allauth's callback
(``/accounts/oidc/sso/login/callback/``) verifies the answer and hands the identity to
``SSOAdapter.pre_social_login``, which finishes here instead of in allauth's own
flow: the account rules of ``controlplane.accounts.sso``, the login throttle, the
claim mapping, an invitation taken along, and the two-factor code step of the
password sign-in (a user with two-factor on still enters a code)."""
from __future__ import annotations

import logging
import time

from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter, get_adapter
from allauth.socialaccount.providers.base import AuthError, AuthProcess
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth.signals import user_login_failed
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST
from requests import RequestException

from controlplane.accounts import services as accounts, sso, twofactor
from controlplane.accounts.models import Invitation

from .. import throttle
from .accounts import GONE
from .auth import PENDING, login_page
from .common import return_url

log = logging.getLogger("switchyard.dashboard")
BACKEND = "controlplane.dashboard.throttle.ThrottledModelBackend"  # the session's backend after SSO


def _gone(request, inv):
    return render(request, "dashboard/invitations/gone.html", {"message": GONE[inv.status], "inv": inv}, status=410)


@require_POST
@csrf_protect
@never_cache
def sso_start(request):
    """The "Sign in with <name>" button (the sign-in page, an invitation's page)."""
    if not sso.enabled():
        raise Http404("single sign-on is not configured")
    next_url = return_url(request, request.POST.get("next"), "")
    data = {}
    token = request.POST.get("invitation", "")
    if token:
        inv = accounts.invitation_for(token)
        if inv is None:
            raise Http404("not found")
        if inv.status != Invitation.PENDING:
            return _gone(request, inv)
        data = {"invitation": token}  # kept in the session with allauth's state, never sent out
    try:
        provider = get_adapter(request).get_provider(request, sso.PROVIDER_ID)
        return provider.redirect(request, AuthProcess.LOGIN, next_url=next_url or None, data=data)
    except (RequestException, ValueError, KeyError) as exc:
        log.warning("single sign-on: the provider's configuration could not be read: %s", exc)
        return login_page(request, next_url=next_url, status=502,
                          error=f"{sso.display_name()} cannot be reached right now. Try again later.")


def _refuse(request, message: str, status: int, next_url: str = ""):
    return login_page(request, next_url=next_url, error=message, status=status)


def finish(request, sociallogin):
    """The response to a verified SSO identity (see the module's docstring)."""
    address = throttle.client_address(request)
    state = sociallogin.state or {}
    next_url = return_url(request, state.get("next"), "")
    token = (state.get("data") or {}).get("invitation") or ""
    inv = accounts.invitation_for(token) if token else None
    identity = sso.identity_from(sociallogin)
    if inv is not None:
        if inv.status != Invitation.PENDING:
            return _gone(request, inv)
        try:
            sso.check_invitation(inv, identity)
        except sso.Refused as refused:
            log.info("SSO invitation to %s refused for subject %s", inv.tenant.slug, identity.uid[:100])
            return _refuse(request, refused.message, 403)
    try:
        user = sso.resolve(sociallogin, source_address=address)
    except sso.Refused as refused:
        if refused.user is not None:
            user_login_failed.send(sender=__name__, credentials={"username": refused.user.get_username()},
                                   request=request)
        log.info("SSO sign-in refused for subject %s: %s", identity.uid[:100], refused.message)
        return _refuse(request, refused.message, 403)
    if throttle.is_blocked(user.get_username(), address):
        setattr(request, throttle.THROTTLED, True)
        return _refuse(request, throttle.refusal_message(), 429)
    changes = sso.apply_mapping(user, identity, source_address=address)
    if changes:
        log.info("SSO mapping for %s: %s", user.get_username(), " ".join(changes))
    if twofactor.is_enabled(user):
        if inv is not None:
            next_url = reverse("dashboard:invitation", args=[token])  # joined after the code step
        request.session[PENDING] = {"user": user.pk, "backend": BACKEND, "next": next_url, "at": time.time()}
        return redirect("dashboard:login_code")
    auth_login(request, user, backend=BACKEND)
    if inv is not None:
        try:
            accounts.accept_as(inv, user, source_address=address)
        except accounts.Gone:
            return _gone(request, inv)
        messages.success(request, f"Welcome, {user.get_username()}: you are now a member of {inv.tenant.slug}.")
        return redirect("dashboard:tenant", slug=inv.tenant.slug)
    return redirect(next_url or "dashboard:overview")


class SSOAdapter(DefaultSocialAccountAdapter):
    """allauth verifies; Switchyard decides (``finish``). allauth's own sign-up, e-mail
    and login pages are never reached."""

    def is_open_for_signup(self, request, sociallogin):
        return False

    def pre_social_login(self, request, sociallogin):
        raise ImmediateHttpResponse(finish(request, sociallogin))

    def on_authentication_error(self, request, provider, error=None, exception=None, extra_context=None):
        name = sso.display_name()
        if error == AuthError.CANCELLED:
            message = f"Sign-in with {name} was cancelled."
        else:
            log.warning("single sign-on failed: %s %s", error, exception)
            message = f"Sign-in with {name} did not complete. Try again."
        raise ImmediateHttpResponse(_refuse(request, message, 401))
