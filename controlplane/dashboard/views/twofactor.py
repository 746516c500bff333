"""A user's own two-factor page: enrol TOTP (QR code and key, confirmed by a code), add,
list and remove security keys (WebAuthn, ``static/dashboard/webauthn.js``), see the
recovery codes once, turn the app off (unless the platform requires two-factor and no
key would be left). ``login_key`` is the sign-in step that uses a key instead of a code;
``user_two_factor_reset`` lets platform staff take two-factor off a user who lost it."""
from __future__ import annotations

import base64

from django.contrib import messages
from django.contrib.auth import get_user_model, login as auth_login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import ValidationError
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from controlplane.accounts import twofactor
from controlplane.audit.services import Actor
from controlplane.tenancy.access import principal as get_principal

from .. import throttle
from ..errors import error_messages, flash_validation_errors
from .auth import PENDING, _pending_user
from .common import staff_or_404

SECRET = "_switchyard_totp_secret"    # session: the key being enrolled, until confirmed
CODES = "_switchyard_recovery_codes"  # session: recovery codes to show once after enrolment


def _post(request, user, actor) -> str | None:
    """Handle one POST of the two-factor page; returns the success message."""
    action = request.POST.get("action")
    if action == "disable":
        twofactor.disable(actor, user, request.POST.get("code", ""))
        return "The authenticator app is off." if twofactor.is_enabled(user) else "Two-factor sign-in is off."
    if action == "add_key" and twofactor.keys_supported():
        codes = twofactor.add_key(actor, user, request.POST.get("name", ""), request.POST.get("credential", ""))
        if codes:
            request.session[CODES] = codes
        return "Security key added." + (" Keep your recovery codes somewhere safe." if codes else "")
    if action == "remove_key" and twofactor.keys_supported():
        name = twofactor.remove_key(actor, user, request.POST.get("key", ""))
        return f"Security key “{name}” removed."
    if twofactor.has_totp(user):
        raise ValidationError({"code": ["the authenticator app is already on"]})
    if not request.session.get(SECRET):
        raise ValidationError({"code": ["the key to confirm was not found; scan the key shown now and try again"]})
    codes = twofactor.enable(actor, user, request.session[SECRET], request.POST.get("code", ""))
    request.session.pop(SECRET, None)
    request.session[CODES] = codes
    return "Two-factor sign-in is on. Keep your recovery codes somewhere safe."


@sensitive_post_parameters("code", "credential")
@never_cache
@login_required
def two_factor(request):
    user = request.user
    errors = []
    if request.method == "POST":
        try:
            messages.success(request, _post(request, user, Actor.from_request(request)))
            return redirect("dashboard:two_factor")
        except ValidationError as exc:
            errors = error_messages(exc)
    enabled, totp = twofactor.is_enabled(user), twofactor.has_totp(user)
    context = {"enabled": enabled, "totp": totp, "required": twofactor.is_required(user), "errors": errors,
               "recovery_codes": request.session.pop(CODES, None), "keys_supported": twofactor.keys_supported(),
               "keys": twofactor.keys(user), "key_name": request.POST.get("name", "") if errors else ""}
    if enabled:
        context["codes_left"] = len(twofactor.recovery_codes(user))
    if not totp:
        secret = request.session.get(SECRET) or twofactor.new_secret()
        request.session[SECRET] = secret
        url = twofactor.otpauth_url(user, secret)
        svg = twofactor.qr_svg(url).encode()
        context.update(secret=secret, qr="data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii"))
    if context["keys_supported"] and len(context["keys"]) < twofactor.MAX_KEYS:
        context["creation_options"] = twofactor.begin_key_registration(user)
    return render(request, "dashboard/two_factor.html", context)


@sensitive_post_parameters("credential")
@csrf_protect
@never_cache
@throttle.with_throttle_status
def login_key(request):
    """The second sign-in step with a security key: GET answers the options for
    ``navigator.credentials.get()`` (JSON); POST checks the key's answer and signs in.
    A wrong answer counts as a failed sign-in (the login throttle), as a wrong code does."""
    user, pending = _pending_user(request)
    if user is None or not twofactor.has_keys(user):
        if request.method == "GET":
            return JsonResponse({"detail": "sign in with your password first"}, status=409)
        messages.error(request, "Your sign-in took too long or was not started here. Sign in again.")
        return redirect("dashboard:login")
    if request.method == "GET":
        return JsonResponse({"request_options": twofactor.begin_key_authentication(user)})
    address = throttle.client_address(request)
    if throttle.is_blocked(user.get_username(), address):
        setattr(request, throttle.THROTTLED, True)
        error = throttle.refusal_message()
    elif twofactor.verify_key(user, request.POST.get("credential", "")):
        request.session.pop(PENDING, None)
        auth_login(request, user, backend=pending["backend"])
        return redirect(pending.get("next") or "dashboard:overview")
    else:
        user_login_failed.send(sender=__name__, credentials={"username": user.get_username()}, request=request)
        error = "The security key's answer was not accepted. Try again, or enter a code."
    return render(request, "dashboard/login_code.html",
                  {"error": error, "keys": True, "totp": twofactor.has_totp(user)})


@login_required
@require_POST
def user_two_factor_reset(request, pk):
    """Platform staff: take every second factor and recovery code off another user."""
    staff_or_404(get_principal(request))
    user = get_user_model().objects.filter(pk=pk).first()
    if user is None:
        raise Http404("not found")
    try:
        twofactor.reset(Actor.from_request(request), user)
        messages.success(request, f"Two-factor sign-in of {user.get_username()} is reset: they sign in with "
                                  "their password and can set it up again.")
    except ValidationError as exc:
        flash_validation_errors(request, exc)
    return redirect("dashboard:user", pk=user.pk)
