"""A user's own two-factor page: enrol TOTP (QR code and key, confirmed by a code),
see the recovery codes once, turn it off (unless the platform requires it)."""
from __future__ import annotations

import base64

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters

from controlplane.accounts import twofactor
from controlplane.audit.services import Actor

from ..errors import error_messages

SECRET = "_switchyard_totp_secret"    # session: the key being enrolled, until confirmed
CODES = "_switchyard_recovery_codes"  # session: recovery codes to show once after enrolment


@sensitive_post_parameters("code")
@never_cache
@login_required
def two_factor(request):
    user = request.user
    enabled = twofactor.is_enabled(user)
    errors = []
    if request.method == "POST":
        actor = Actor.from_request(request)
        try:
            if request.POST.get("action") == "disable":
                twofactor.disable(actor, user, request.POST.get("code", ""))
                messages.success(request, "Two-factor sign-in is off.")
                return redirect("dashboard:two_factor")
            if not enabled and request.session.get(SECRET):
                codes = twofactor.enable(actor, user, request.session[SECRET], request.POST.get("code", ""))
                request.session.pop(SECRET, None)
                request.session[CODES] = codes
                messages.success(request, "Two-factor sign-in is on. Keep your recovery codes somewhere safe.")
                return redirect("dashboard:two_factor")
            if not enabled:
                errors = ["code: the key to confirm was not found; scan the key shown now and try again"]
        except ValidationError as exc:
            errors = error_messages(exc)
    context = {"enabled": enabled, "required": twofactor.is_required(user), "errors": errors,
               "recovery_codes": request.session.pop(CODES, None)}
    if enabled:
        context["codes_left"] = len(twofactor.recovery_codes(user))
    else:
        secret = request.session.get(SECRET) or twofactor.new_secret()
        request.session[SECRET] = secret
        url = twofactor.otpauth_url(user, secret)
        svg = twofactor.qr_svg(url).encode()
        context.update(secret=secret, qr="data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii"))
    return render(request, "dashboard/two_factor.html", context)
