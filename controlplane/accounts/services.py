"""Accounts inside the product: users (platform staff) and invitations (tenant owners).

The dashboard, the REST API and the admin call these functions; who may call them is
decided by the caller (``controlplane.tenancy.access``), the rules about the values
live here. Errors are ``ValidationError`` message dicts keyed by field name. Every
change is audited.

Invitations: a one-time link (``/invitations/<token>/``) that expires after
``SWITCHYARD_INVITATION_DAYS``; only the sha256 of its token is stored. The inviting
owner learns nothing about the address: the answer is the same whether an account
with it exists or not.
"""
from __future__ import annotations

import datetime as dt
import logging
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.mail import get_connection, send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Prefetch
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from controlplane.audit.services import Actor, record
from controlplane.tenancy.models import Membership, Tenant, hash_token

from .models import Invitation

log = logging.getLogger("switchyard.accounts")
ROLES = [r for r, _ in Membership.ROLES]
User = get_user_model()


class Gone(Exception):
    """An invitation link that can no longer be used: ``reason`` is ``expired``,
    ``revoked`` or ``accepted``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------ e-mail

def _send(subject: str, body: str, to: str) -> str:
    """Send one message through the platform's SMTP settings; '' when it was sent, else
    the reason it was not (the caller shows it; nothing is retried)."""
    try:
        connection = get_connection(timeout=settings.SWITCHYARD_ALERT_TIMEOUT)
        if send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [to], connection=connection) != 1:
            return "the mail server accepted no message"
    except Exception as exc:  # noqa: BLE001 - any SMTP/socket failure is reported, not raised
        log.warning("e-mail to %s failed: %s", to, exc)
        return f"{type(exc).__name__}: {exc}"[:300]
    return ""


# ------------------------------------------------------------------ users

def _user_view(user) -> dict:
    return {"username": user.get_username(), "email": user.email, "is_active": user.is_active,
            "is_staff": user.is_staff}


def users():
    """Every user with their memberships (for the users page and ``/api/v1/users/``)."""
    return User.objects.order_by("username").prefetch_related(
        Prefetch("memberships", queryset=Membership.objects.select_related("tenant").order_by("tenant__slug")),
        "socialaccount_set")


def _clean_email(email: str, required: bool = False) -> str:
    email = (email or "").strip()
    if not email:
        if required:
            raise ValidationError({"email": ["is required"]})
        return ""
    try:
        validate_email(email)
    except ValidationError:
        raise ValidationError({"email": ["is not a valid e-mail address"]}) from None
    return email


def _check_password(password: str, user=None, field: str = "password") -> None:
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise ValidationError({field: list(exc.messages)}) from None


def create_user(actor: Actor, username: str, *, email: str = "", password: str = "", is_staff: bool = False,
                note: str = ""):
    """A new active user. Without a password the account has none yet: send it a
    password reset link (``send_password_reset``) so its owner sets one."""
    username = (username or "").strip()
    if not username:
        raise ValidationError({"username": ["is required"]})
    try:
        User.username_validator(username)
    except ValidationError as exc:
        raise ValidationError({"username": list(exc.messages)}) from None
    if len(username) > 150:
        raise ValidationError({"username": ["at most 150 characters"]})
    email = _clean_email(email)
    candidate = User(username=username, email=email)
    if password:
        from . import sso
        if not sso.password_allowed(username):
            raise ValidationError({"password": ["local passwords are off (SWITCHYARD_LOCAL_PASSWORDS): leave it "
                                                f"empty; the user signs in with {sso.display_name()}"]})
        _check_password(password, candidate)
    with transaction.atomic():
        if User.objects.filter(username__iexact=username).exists():
            raise ValidationError({"username": [f"a user named {username} already exists"]})
        user = User.objects.create_user(username, email=email, password=password or None, is_staff=bool(is_staff))
        record(actor, "create", user, after=_user_view(user), note=note)
    return user


def update_user(actor: Actor, user, *, email: str | None = None, is_active: bool | None = None,
                is_staff: bool | None = None, note: str = ""):
    """Change a user's e-mail, active flag or staff flag. Nobody deactivates or
    un-staffs themselves (that would lock the last operator out)."""
    myself = actor.user is not None and getattr(actor.user, "pk", None) == user.pk
    if myself and is_active is False:
        raise ValidationError({"is_active": ["you cannot deactivate yourself"]})
    if myself and is_staff is False:
        raise ValidationError({"is_staff": ["you cannot take away your own staff role"]})
    with transaction.atomic():
        before = _user_view(user)
        if email is not None:
            user.email = _clean_email(email)
        if is_active is not None:
            user.is_active = bool(is_active)
        if is_staff is not None:
            user.is_staff = bool(is_staff)
        user.save(update_fields=["email", "is_active", "is_staff"])
        after = _user_view(user)
        if after != before:
            action = {False: "deactivate", True: "activate"}.get(is_active) if before["is_active"] != after[
                "is_active"] else "update"
            record(actor, action, user, before=before, after=after, note=note)
    return user


def set_active(actor: Actor, user, active: bool, note: str = ""):
    """Deactivate (or reactivate) ``user``: a deactivated user cannot sign in, their
    sessions stop working at the next request and their API tokens are refused."""
    return update_user(actor, user, is_active=active, note=note)


def delete_user(actor: Actor, user, note: str = "") -> None:
    if actor.user is not None and getattr(actor.user, "pk", None) == user.pk:
        raise ValidationError({"user": ["you cannot delete yourself"]})
    with transaction.atomic():
        before = _user_view(user)
        before["memberships"] = [f"{m.tenant.slug}:{m.role}" for m in user.memberships.select_related("tenant")]
        pk = user.pk
        user.delete()
        record(actor, "delete", user, before=before, note=note, object_id=pk)


def password_reset_link(user, base_url: str) -> str:
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    return base_url.rstrip("/") + reverse("dashboard:password_reset_confirm", args=[uid, token])


def send_password_reset(actor: Actor, user, base_url: str, note: str = "") -> str:
    """E-mail ``user`` a link to set a new password (Django's password reset token: it
    stops working once the password changed, and after ``PASSWORD_RESET_TIMEOUT``).
    Returns '' when sent, else why not."""
    if not user.email:
        raise ValidationError({"email": [f"{user.get_username()} has no e-mail address; add one first"]})
    if not user.is_active:
        raise ValidationError({"is_active": [f"{user.get_username()} is deactivated; activate the user first"]})
    from . import sso
    if not sso.password_allowed(user.get_username()):
        raise ValidationError({"password": ["local passwords are off (SWITCHYARD_LOCAL_PASSWORDS): "
                                            f"{user.get_username()} signs in with {sso.display_name()}"]})
    link = password_reset_link(user, base_url)
    hours = settings.PASSWORD_RESET_TIMEOUT // 3600
    body = (f"Hello {user.get_username()},\n\nset a new password for your Switchyard account here:\n\n{link}\n\n"
            f"The link works once and for {hours} hours. If you did not expect this, ignore this message.\n")
    error = _send("[Switchyard] Set your password", body, user.email)
    record(actor, "reset_password", user, after={"email": user.email, "sent": not error}, note=note)
    return error


# ------------------------------------------------------------------ invitations

def invitation_link(token: str, base_url: str) -> str:
    return base_url.rstrip("/") + reverse("dashboard:invitation", args=[token])


def _invitation_view(inv: Invitation) -> dict:
    return {"email": inv.email, "tenant": inv.tenant.slug, "role": inv.role, "expires": inv.expires.isoformat()}


def invitations_of(tenant: Tenant):
    return Invitation.objects.filter(tenant=tenant).select_related("tenant", "invited_by", "accepted_by")


def invite(actor: Actor, tenant: Tenant, email: str, role: str, base_url: str,
           note: str = "") -> tuple[Invitation, str, str]:
    """Invite ``email`` into ``tenant`` with ``role``; returns (invitation, link, mail
    error or ''). The answer never depends on whether an account with that address
    exists. A pending invitation of the same address to the same tenant is replaced."""
    email = _clean_email(email, required=True)
    if role not in ROLES:
        raise ValidationError({"role": [f"must be one of {', '.join(ROLES)}"]})
    token = secrets.token_urlsafe(32)
    expires = timezone.now() + dt.timedelta(days=settings.SWITCHYARD_INVITATION_DAYS)
    inviter = actor.user if getattr(actor.user, "is_authenticated", False) else None
    with transaction.atomic():
        for old in Invitation.objects.select_for_update().filter(
                tenant=tenant, email__iexact=email, accepted__isnull=True, revoked__isnull=True):
            _revoke(actor, old, note="replaced by a new invitation")
        inv = Invitation.objects.create(tenant=tenant, email=email, role=role, token_hash=hash_token(token),
                                        invited_by=inviter, expires=expires)
        record(actor, "invite", inv, after=_invitation_view(inv), note=note, tenant=tenant)
    link = invitation_link(token, base_url)
    who = inviter.get_username() if inviter is not None else "An operator"
    body = (f"{who} invites you to the tenant {tenant.name} ({tenant.slug}) on Switchyard as {role}.\n\n"
            f"Accept the invitation here (set a password, or sign in if you already have an account):\n\n"
            f"{link}\n\nThe link works once, until {expires:%Y-%m-%d %H:%M} UTC.\n")
    error = _send(f"[Switchyard] Invitation to {tenant.slug}", body, email)
    return inv, link, error


def _revoke(actor, inv: Invitation, note: str = "") -> None:
    inv.revoked = timezone.now()
    inv.save(update_fields=["revoked"])
    record(actor, "revoke", inv, after={"email": inv.email, "revoked": inv.revoked.isoformat()}, note=note,
           tenant=inv.tenant)


def revoke_invitation(actor: Actor, inv: Invitation, note: str = "") -> Invitation:
    """Revoke a pending invitation (its link is refused from then on); idempotent."""
    with transaction.atomic():
        inv = Invitation.objects.select_for_update().select_related("tenant").get(pk=inv.pk)
        if inv.accepted is not None:
            raise ValidationError({"invitation": ["was already accepted; remove the member instead"]})
        if inv.revoked is None:
            _revoke(actor, inv, note=note)
    return inv


def invitation_for(token: str) -> Invitation | None:
    """The invitation a link's token names (whatever its state), or None."""
    if not token or len(token) > 200:
        return None
    return Invitation.objects.select_related("tenant").filter(token_hash=hash_token(token)).first()


def check_usable(inv: Invitation) -> None:
    status = inv.status
    if status != Invitation.PENDING:
        raise Gone(status)


def account_for(inv: Invitation):
    """The active account with the invited address, if any (shown only to the holder
    of the link, never to the inviting owner)."""
    return User.objects.filter(email__iexact=inv.email, is_active=True).order_by("pk").first()


def _join(inv: Invitation, user, actor: Actor) -> Membership:
    inv.accepted = timezone.now()
    inv.accepted_by = user
    inv.save(update_fields=["accepted", "accepted_by"])
    member = Membership.objects.filter(user=user, tenant=inv.tenant).first()
    if member is None:
        member = Membership.objects.create(user=user, tenant=inv.tenant, role=inv.role)
        record(actor, "create", member, after={"user": user.get_username(), "tenant": inv.tenant.slug,
                                               "role": member.role}, note=f"invitation of {inv.email}",
               tenant=inv.tenant)
    record(actor, "accept", inv, after={"email": inv.email, "user": user.get_username()}, tenant=inv.tenant)
    return member


def accept_as(inv: Invitation, user, source_address: str | None = None) -> Membership:
    """The signed-in ``user`` accepts: they become a member with the invited role (an
    existing membership keeps its role)."""
    actor = Actor(user=user, source_address=source_address)
    with transaction.atomic():
        inv = Invitation.objects.select_for_update().select_related("tenant").get(pk=inv.pk)
        check_usable(inv)
        return _join(inv, user, actor)


def accept_with_new_account(inv: Invitation, username: str, password: str,
                            source_address: str | None = None):
    """Create the invitee's account (with the invited address) and make it a member."""
    from . import sso
    if not sso.local_passwords():
        raise ValidationError({"password": [f"local passwords are off: accept with {sso.display_name()}"]})
    username = (username or "").strip()
    if not username:
        raise ValidationError({"username": ["is required"]})
    try:
        User.username_validator(username)
    except ValidationError as exc:
        raise ValidationError({"username": list(exc.messages)}) from None
    _check_password(password, User(username=username, email=inv.email))
    try:
        with transaction.atomic():
            inv = Invitation.objects.select_for_update().select_related("tenant").get(pk=inv.pk)
            check_usable(inv)
            if User.objects.filter(username__iexact=username).exists():
                raise ValidationError({"username": ["this username is taken; choose another"]})
            user = User.objects.create_user(username[:150], email=inv.email, password=password)
            actor = Actor(user=user, source_address=source_address)
            record(actor, "create", user, after=_user_view(user), note=f"accepted invitation to {inv.tenant.slug}")
            _join(inv, user, actor)
    except IntegrityError:
        raise ValidationError({"username": ["this username is taken; choose another"]}) from None
    return user
