"""Two-factor sign-in: TOTP with recovery codes, stored by django-allauth's ``mfa``
(``Authenticator`` rows; the TOTP secret and the recovery-code seed encrypted at rest
with ``SWITCHYARD_ENCRYPTION_KEY``). Optional per user; ``SWITCHYARD_MFA_REQUIRED``
(``staff`` or ``all``) makes it mandatory. The dashboard's ``/login/`` asks for a code
after the password (``controlplane.dashboard.views.auth``)."""
from __future__ import annotations

from allauth.mfa.adapter import DefaultMFAAdapter
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret, validate_totp_code
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from controlplane import crypto
from controlplane.audit.services import Actor, record


class EncryptingMFAAdapter(DefaultMFAAdapter):
    """allauth's adapter with secrets encrypted at rest and a fixed issuer name."""

    def encrypt(self, text: str) -> str:
        return crypto.encrypt(text)

    def decrypt(self, encrypted_text: str) -> str:
        return crypto.decrypt(encrypted_text)

    def get_totp_issuer(self) -> str:
        return "Switchyard"


def adapter() -> EncryptingMFAAdapter:
    return EncryptingMFAAdapter()


def is_enabled(user) -> bool:
    return bool(user is not None and user.pk and Authenticator.objects.filter(
        user_id=user.pk, type=Authenticator.Type.TOTP).exists())


def is_required(user) -> bool:
    """Whether the platform requires ``user`` to use two-factor."""
    mode = getattr(settings, "SWITCHYARD_MFA_REQUIRED", "")
    if mode == "all":
        return True
    return mode == "staff" and bool(user.is_staff or user.is_superuser)


def new_secret() -> str:
    return generate_totp_secret()


def otpauth_url(user, secret: str) -> str:
    return adapter().build_totp_url(user, secret)


def qr_svg(url: str) -> str:
    return adapter().build_totp_svg(url)


def enable(actor: Actor, user, secret: str, code: str) -> list[str]:
    """Turn on TOTP for ``user`` once ``code`` proves their app holds ``secret``;
    returns the recovery codes (shown to the user now, and on their two-factor page)."""
    if not validate_totp_code(secret, (code or "").strip()):
        raise ValidationError({"code": ["this code is not valid for the key shown; check the time on your device"]})
    with transaction.atomic():
        if is_enabled(user):
            raise ValidationError({"code": ["two-factor is already on"]})
        Authenticator.objects.filter(user_id=user.pk, type=Authenticator.Type.RECOVERY_CODES).delete()
        TOTP.activate(user, secret)  # allauth encrypts it through the adapter
        codes = RecoveryCodes.activate(user)
        record(actor, "enable_2fa", user, after={"username": user.get_username()})
    return codes.get_unused_codes()


def disable(actor: Actor, user, code: str) -> None:
    """Turn two-factor off (a current code or a recovery code confirms it); refused
    where the platform requires it."""
    if is_required(user):
        raise ValidationError({"code": ["the platform requires two-factor for your account"]})
    if not verify(user, code):
        raise ValidationError({"code": ["this code is not valid"]})
    with transaction.atomic():
        Authenticator.objects.filter(user_id=user.pk).delete()
        record(actor, "disable_2fa", user, before={"username": user.get_username()})


def recovery_codes(user) -> list[str]:
    row = Authenticator.objects.filter(user_id=user.pk, type=Authenticator.Type.RECOVERY_CODES).first()
    return row.wrap().get_unused_codes() if row else []


def verify(user, code: str) -> bool:
    """A TOTP code (each usable once) or an unused recovery code (then used up)."""
    code = "".join((code or "").split())
    if not code or len(code) > 64:
        return False
    for row in Authenticator.objects.filter(user_id=user.pk, type__in=[Authenticator.Type.TOTP,
                                                                        Authenticator.Type.RECOVERY_CODES]):
        if row.wrap().validate_code(code):
            row.record_usage()
            return True
    return False
