"""Two-factor sign-in, stored by django-allauth's ``mfa`` (``Authenticator`` rows):

* TOTP (an authenticator app) with recovery codes; the TOTP secret and the
  recovery-code seed are encrypted at rest with ``SWITCHYARD_ENCRYPTION_KEY``.
* WebAuthn security keys / passkeys (``fido2`` through ``allauth.mfa.webauthn``), used
  instead of a code after the password. The relying party id is the dashboard's host
  name, or ``SWITCHYARD_WEBAUTHN_RP_ID``.

Optional per user; ``SWITCHYARD_MFA_REQUIRED`` (``staff`` or ``all``) makes it mandatory.
The dashboard's ``/login/`` asks for a code or a key after the password
(``controlplane.dashboard.views.auth`` and ``.views.twofactor``).

Each TOTP code signs in once, across processes: the last used time step is kept in the
TOTP row (RFC 6238 section 5.2) and checked and written under a row lock, so no cache
has to be shared for it. Recovery codes are used up under the same lock.
"""
from __future__ import annotations

import json
import unicodedata

from allauth.core import context
from allauth.core.internal.cryptokit import compare_user_code
from allauth.mfa.adapter import DefaultMFAAdapter
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import (
    TOTP,
    format_hotp_value,
    generate_totp_secret,
    hotp_value,
    yield_hotp_counters_from_time,
)
from allauth.mfa.utils import decrypt
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from controlplane import crypto
from controlplane.audit.services import Actor, record

LAST_STEP = "switchyard_last_step"  # TOTP row data: the time step of the last code used
MAX_KEYS = 10                       # security keys per user
KEY_NAME_MAX = 64
CREDENTIAL_MAX_CHARS = 32768        # a registration or assertion, as JSON from the browser
FACTORS = (Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN)


def request_host_name(request) -> str:
    """The host name of ``request`` (validated by ALLOWED_HOSTS), without the port."""
    host = request.get_host()
    if host.startswith("["):
        return host[1:host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class EncryptingMFAAdapter(DefaultMFAAdapter):
    """allauth's adapter with secrets encrypted at rest, a fixed issuer name and the
    WebAuthn relying party of the dashboard's own origin."""

    def encrypt(self, text: str) -> str:
        return crypto.encrypt(text)

    def decrypt(self, encrypted_text: str) -> str:
        return crypto.decrypt(encrypted_text)

    def get_totp_issuer(self) -> str:
        return "Switchyard"

    def get_public_key_credential_rp_entity(self) -> dict[str, str]:
        rp_id = settings.SWITCHYARD_WEBAUTHN_RP_ID or request_host_name(context.request)
        return {"id": rp_id, "name": "Switchyard"}


def adapter() -> EncryptingMFAAdapter:
    return EncryptingMFAAdapter()


def keys_supported() -> bool:
    return Authenticator.Type.WEBAUTHN in settings.MFA_SUPPORTED_TYPES


def has_totp(user) -> bool:
    return bool(user is not None and user.pk and Authenticator.objects.filter(
        user_id=user.pk, type=Authenticator.Type.TOTP).exists())


def keys(user) -> list[dict]:
    """The user's security keys: ``id``, ``name``, ``created``, ``last_used``."""
    if user is None or not user.pk or not keys_supported():
        return []
    rows = Authenticator.objects.filter(user_id=user.pk, type=Authenticator.Type.WEBAUTHN).order_by("created_at", "pk")
    return [{"id": row.pk, "name": row.data.get("name", ""), "created": row.created_at, "last_used": row.last_used_at}
            for row in rows]


def has_keys(user) -> bool:
    return bool(keys_supported() and user is not None and user.pk and Authenticator.objects.filter(
        user_id=user.pk, type=Authenticator.Type.WEBAUTHN).exists())


def is_enabled(user) -> bool:
    """Whether signing in asks ``user`` for a second factor (an app code or a key; a key
    still counts if keys were switched off later: then a recovery code signs in)."""
    return bool(user is not None and user.pk and Authenticator.objects.filter(
        user_id=user.pk, type__in=FACTORS).exists())


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


def _totp_step(secret: str, code: str) -> int | None:
    """The time step (within the tolerance window) whose code is ``code``, else None."""
    for step in yield_hotp_counters_from_time():
        if compare_user_code(actual=code, expected=format_hotp_value(hotp_value(secret, step))):
            return step
    return None


def _new_recovery_codes(user) -> list[str]:
    Authenticator.objects.filter(user_id=user.pk, type=Authenticator.Type.RECOVERY_CODES).delete()
    return RecoveryCodes.activate(user).get_unused_codes()


def enable(actor: Actor, user, secret: str, code: str) -> list[str]:
    """Turn on TOTP for ``user`` once ``code`` proves their app holds ``secret``;
    returns the new recovery codes (shown to the user once)."""
    step = _totp_step(secret, "".join((code or "").split())) if code and len(code) <= 64 else None
    if step is None:
        raise ValidationError({"code": ["this code is not valid for the key shown; check the time on your device"]})
    with transaction.atomic():
        if has_totp(user):
            raise ValidationError({"code": ["the authenticator app is already on"]})
        row = TOTP.activate(user, secret).instance  # allauth encrypts it through the adapter
        row.data[LAST_STEP] = step  # the enrolment code does not sign in afterwards
        row.save(update_fields=["data"])
        codes = _new_recovery_codes(user)
        record(actor, "enable_2fa", user, after={"username": user.get_username()})
    return codes


def _forget_dangling_recovery_codes(user) -> None:
    if not Authenticator.objects.filter(user_id=user.pk, type__in=FACTORS).exists():
        Authenticator.objects.filter(user_id=user.pk, type=Authenticator.Type.RECOVERY_CODES).delete()


def disable(actor: Actor, user, code: str) -> None:
    """Turn the authenticator app off (a current code or a recovery code confirms it);
    with no security key left, the recovery codes go too. Refused where the platform
    requires two-factor and no security key would be left."""
    if is_required(user) and not has_keys(user):
        raise ValidationError({"code": ["the platform requires two-factor for your account"]})
    if not verify(user, code):
        raise ValidationError({"code": ["this code is not valid"]})
    with transaction.atomic():
        Authenticator.objects.filter(user_id=user.pk, type=Authenticator.Type.TOTP).delete()
        _forget_dangling_recovery_codes(user)
        record(actor, "disable_2fa", user, before={"username": user.get_username()})


def recovery_codes(user) -> list[str]:
    row = Authenticator.objects.filter(user_id=user.pk, type=Authenticator.Type.RECOVERY_CODES).first()
    return row.wrap().get_unused_codes() if row else []


def _use_totp(row: Authenticator, code: str) -> bool:
    step = _totp_step(decrypt(row.data["secret"]), code)
    if step is None or step <= row.data.get(LAST_STEP, -1):
        return False
    row.data[LAST_STEP] = step
    row.last_used_at = timezone.now()
    row.save(update_fields=["data", "last_used_at"])
    return True


def verify(user, code: str) -> bool:
    """A TOTP code (each usable once, in any process) or an unused recovery code (then
    used up)."""
    code = "".join((code or "").split())
    if not code or len(code) > 64:
        return False
    with transaction.atomic():
        rows = Authenticator.objects.select_for_update().filter(
            user_id=user.pk, type__in=[Authenticator.Type.TOTP, Authenticator.Type.RECOVERY_CODES]).order_by("pk")
        for row in rows:
            if row.type == Authenticator.Type.TOTP:
                if _use_totp(row, code):
                    return True
            elif row.wrap().validate_code(code):  # marks the code used on the locked row
                row.record_usage()
                return True
    return False


def summary(user) -> str:
    """What two-factor ``user`` has, in words ("off", "app", "app and 2 security keys")."""
    rows = list(Authenticator.objects.filter(user_id=user.pk, type__in=FACTORS).values_list("type", flat=True))
    parts = ["app"] if Authenticator.Type.TOTP in rows else []
    n = rows.count(Authenticator.Type.WEBAUTHN) if keys_supported() else 0
    if n:
        parts.append(f"{n} security key{'s' if n != 1 else ''}")
    return " and ".join(parts) if parts else "off"


def reset(actor: Actor, user) -> None:
    """Platform staff take every second factor and recovery code off another user who
    lost them all; the user signs in with the password and enrols again."""
    if actor.user is not None and actor.user.pk == user.pk:
        raise ValidationError({"user": ["turn your own two-factor off on your two-factor page"]})
    with transaction.atomic():
        before = summary(user)
        if before == "off":
            raise ValidationError({"user": [f"{user.get_username()} has no two-factor sign-in"]})
        Authenticator.objects.filter(user_id=user.pk).delete()
        record(actor, "reset_2fa", user, before={"username": user.get_username(), "two_factor": before})


# ----------------------------------------------------------------------------- security keys
def _webauthn():
    from allauth.mfa.webauthn.internal import auth
    return auth


def _credential(text: str) -> dict:
    if not isinstance(text, str) or not text or len(text) > CREDENTIAL_MAX_CHARS:
        raise ValidationError({"credential": ["the security key's answer is missing or too large"]})
    try:
        value = json.loads(text)
    except ValueError:
        raise ValidationError({"credential": ["the security key's answer is not valid"]}) from None
    if not isinstance(value, dict):
        raise ValidationError({"credential": ["the security key's answer is not valid"]})
    return value


def clean_key_name(name: str) -> str:
    name = unicodedata.normalize("NFC", (name or "").strip())
    if not name:
        raise ValidationError({"name": ["give the key a name (for example: blue YubiKey)"]})
    if len(name) > KEY_NAME_MAX:
        raise ValidationError({"name": [f"at most {KEY_NAME_MAX} characters"]})
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for ch in name):
        raise ValidationError({"name": ["letters, digits, spaces and punctuation only"]})
    return name


def begin_key_registration(user) -> dict:
    """The ``navigator.credentials.create()`` options for a new key of ``user`` (the
    challenge is kept in the session of the current request)."""
    return _webauthn().begin_registration(user, passwordless=False)


def add_key(actor: Actor, user, name: str, credential: str) -> list[str]:
    """Register the key whose answer to the session's challenge is ``credential``;
    returns new recovery codes when this is the user's first second factor, else []."""
    name = clean_key_name(name)
    value = _credential(credential)
    auth = _webauthn()
    if Authenticator.objects.filter(user_id=user.pk, type=Authenticator.Type.WEBAUTHN).count() >= MAX_KEYS:
        raise ValidationError({"name": [f"at most {MAX_KEYS} security keys per account; remove one first"]})
    try:
        auth.parse_registration_response(value)
        binding = auth.complete_registration(value)
    except ValidationError:
        raise ValidationError({"credential": ["the security key's answer did not match; try again"]}) from None
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ValidationError({"credential": ["the security key's answer is not valid"]}) from None
    with transaction.atomic():
        existing = {c.credential_id for c in auth.get_credentials(user)}
        if binding.credential_data is None or binding.credential_data.credential_id in existing:
            raise ValidationError({"credential": ["this security key is already registered"]})
        first = not is_enabled(user)
        row = auth.WebAuthn.add(user, name, value).instance
        codes = _new_recovery_codes(user) if first or not recovery_codes(user) else []
        record(actor, "add_security_key", user, after={"username": user.get_username(), "key": name, "key_id": row.pk})
    return codes


def remove_key(actor: Actor, user, key_id) -> str:
    """Remove one of ``user``'s keys; returns its name. Refused where the platform
    requires two-factor and it is the last second factor."""
    with transaction.atomic():
        row = Authenticator.objects.select_for_update().filter(
            user_id=user.pk, type=Authenticator.Type.WEBAUTHN, pk=key_id).first() if str(key_id).isdigit() else None
        if row is None:
            raise ValidationError({"key": ["no such security key"]})
        others = Authenticator.objects.filter(user_id=user.pk, type__in=FACTORS).exclude(pk=row.pk).exists()
        if is_required(user) and not others:
            raise ValidationError({"key": ["the platform requires two-factor for your account: "
                                           "add another key or an authenticator app first"]})
        name = row.data.get("name", "")
        row.delete()
        _forget_dangling_recovery_codes(user)
        record(actor, "remove_security_key", user, before={"username": user.get_username(), "key": name,
                                                           "key_id": key_id})
    return name


def begin_key_authentication(user) -> dict:
    """The ``navigator.credentials.get()`` options for signing in ``user`` with one of
    their keys (the challenge is kept in the session)."""
    return _webauthn().begin_authentication(user)


def verify_key(user, credential: str) -> bool:
    """Whether ``credential`` is a valid answer of one of ``user``'s keys to the
    session's challenge (each challenge answers once)."""
    if not has_keys(user):
        return False
    try:
        value = _credential(credential)
        auth = _webauthn()
        auth.parse_authentication_response(value)
        row = auth.complete_authentication(user, value)
    except (ValidationError, ValueError, TypeError, KeyError, AttributeError):
        _webauthn().clear_state()
        return False
    row.record_usage()
    return True
