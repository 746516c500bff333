"""``Authorization: Bearer <token>``: an ``ApiToken`` looked up by its hash.

A revoked or unknown token is a 401, and so is a token of a deactivated user or a
per-tenant token whose (non-staff) user is no longer a member of its tenant.
``last_used`` is written at most once a minute per token, so busy clients do not
turn every read into a write. ``request.auth`` is the ``ApiToken``; ``request.user``
its user (``permissions.principal_for`` turns a per-tenant token into that tenant
and role only).
"""
from __future__ import annotations

import datetime as dt

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, SessionAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed

from controlplane.tenancy.access import is_staff
from controlplane.tenancy.models import ApiToken, Membership, hash_token

LAST_USED_EVERY = dt.timedelta(minutes=1)


class BearerTokenAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise AuthenticationFailed("Authorization header must be: Bearer <token>")
        try:
            plain = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed("invalid token") from None
        token = (ApiToken.objects.select_related("user", "tenant")
                 .filter(token_hash=hash_token(plain), revoked__isnull=True).first())
        if token is None or not token.user.is_active:
            raise AuthenticationFailed("invalid or revoked token")
        if token.tenant_id is not None and not is_staff(token.user) and not Membership.objects.filter(
                user_id=token.user_id, tenant_id=token.tenant_id).exists():
            # the user lost the membership the token acts in
            raise AuthenticationFailed("invalid or revoked token")
        now = timezone.now()
        if token.last_used is None or now - token.last_used >= LAST_USED_EVERY:
            ApiToken.objects.filter(pk=token.pk).update(last_used=now)
            token.last_used = now
        return token.user, token

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class DashboardSessionAuthentication(SessionAuthentication):
    """The dashboard's session, with CSRF checks on unsafe methods (DRF's own)."""


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "controlplane.api.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "An API token (`manage.py createapitoken` or `POST /api/v1/api-tokens/`)."}


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = "controlplane.api.authentication.DashboardSessionAuthentication"
    name = "sessionAuth"

    def get_security_definition(self, auto_schema):
        from django.conf import settings
        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME,
                "description": "The dashboard session; unsafe methods also need the CSRF token."}
