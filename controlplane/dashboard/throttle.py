"""Login throttling for every Django sign-in (the dashboard's ``/login/`` and
``/admin/login/``): after ``SWITCHYARD_LOGIN_MAX_FAILURES`` failed attempts for one
username from one client address within ``SWITCHYARD_LOGIN_WINDOW_SECONDS``, further
attempts are refused until the oldest failure leaves the window.

The username is keyed the way the login form reads it (NFKC, as Django's
``UsernameField`` does) and casefolded, so ``ｔa_editor`` and ``TA_editor`` count
against ``ta_editor``. ``ThrottledModelBackend`` (the ``AUTHENTICATION_BACKENDS``)
refuses inside ``authenticate()``, so no login path can skip the check; failures are
counted from Django's ``user_login_failed`` signal and forgotten on ``user_logged_in``.
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
import unicodedata

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver
from django.utils import timezone

from controlplane.accounts import sso

from .models import LoginAttempt

log = logging.getLogger("switchyard.dashboard")
THROTTLED = "_switchyard_login_throttled"  # request attribute set when a sign-in was refused


def username_key(username: str) -> str:
    return unicodedata.normalize("NFKC", username or "").strip().casefold()[:150]


def client_address(request) -> str:
    return (request.META.get("REMOTE_ADDR") or "unknown")[:64]


def is_blocked(username: str, address: str) -> bool:
    since = timezone.now() - dt.timedelta(seconds=settings.SWITCHYARD_LOGIN_WINDOW_SECONDS)
    failures = LoginAttempt.objects.filter(username=username_key(username), address=address, created__gte=since)
    return failures.count() >= settings.SWITCHYARD_LOGIN_MAX_FAILURES


def was_throttled(request) -> bool:
    return getattr(request, THROTTLED, False)


def refusal_message() -> str:
    minutes = max(1, settings.SWITCHYARD_LOGIN_WINDOW_SECONDS // 60)
    return f"Too many failed sign-in attempts for this username from your address. Try again in {minutes} minutes."


class ThrottledModelBackend(ModelBackend):
    """Django's username/password backend, refusing (before any password check) while
    the username and address are blocked; raising stops every backend after it too."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is not None and username is not None:
            address = client_address(request)
            if is_blocked(username, address):
                setattr(request, THROTTLED, True)
                log.warning("login for %s from %s refused (throttled)", username_key(username), address)
                raise PermissionDenied("login throttled")
        if username is not None and not sso.password_allowed(username):
            # SWITCHYARD_LOCAL_PASSWORDS=off: only the break-glass account signs in with a
            # password (counted as a failed sign-in like a wrong password)
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


@receiver(user_login_failed, dispatch_uid="switchyard-login-throttle-failed")
def count_failure(sender, credentials, request=None, **kwargs):
    if request is None or was_throttled(request) or "username" not in credentials:
        return
    address = client_address(request)
    LoginAttempt.objects.create(username=username_key(credentials["username"]), address=address)
    log.info("failed login for %s from %s", username_key(credentials["username"]), address)


@receiver(user_logged_in, dispatch_uid="switchyard-login-throttle-success")
def forget_failures(sender, request, user, **kwargs):
    if request is not None:
        LoginAttempt.objects.filter(username=username_key(user.get_username()),
                                    address=client_address(request)).delete()


def with_throttle_status(view):
    """Answer 429 when the wrapped login view's sign-in was refused by the throttle."""
    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        if was_throttled(request):
            response.status_code = 429
        return response
    return wrapped
