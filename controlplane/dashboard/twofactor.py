"""``SWITCHYARD_MFA_REQUIRED``: a signed-in user whom the platform requires to use
two-factor but who has not enrolled yet reaches only the enrolment page (and sign-out)
until they have; the API answers 403 to their session (API tokens stay as they are)."""
from __future__ import annotations

from django.conf import settings
from django.db import DatabaseError
from django.http import JsonResponse
from django.shortcuts import redirect

from controlplane.accounts import twofactor

ALLOWED_PREFIXES = ("/account/two-factor/", "/logout/", "/static/", "/favicon.ico", "/login/")


def must_enrol(request) -> bool:
    if not settings.SWITCHYARD_MFA_REQUIRED or request.path.startswith(ALLOWED_PREFIXES) \
            or "HTTP_AUTHORIZATION" in request.META:
        return False
    try:
        user = request.user
        return bool(user.is_authenticated and twofactor.is_required(user) and not twofactor.is_enabled(user))
    except DatabaseError:
        return False  # the view meets the same outage and answers 503 (controlplane.unavailable)


class RequireTwoFactorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if must_enrol(request):
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": "two-factor sign-in is required for your account: "
                                               "set it up at /account/two-factor/"}, status=403)
            return redirect("dashboard:two_factor")
        return self.get_response(request)
