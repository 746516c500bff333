"""Actions on memberships and API tokens: validate → write → audit, atomically.

They change no routing configuration, so they publish no version. Who may call them
(owners of the tenant, platform staff) is decided by the caller
(``controlplane.tenancy.access``); the rules about the values live here. Errors are
``ValidationError`` message dicts keyed by field name.
"""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from controlplane.audit.services import record

from .access import is_staff
from .models import ApiToken, Membership, Tenant

ROLES = [r for r, _ in Membership.ROLES]


def _check_role(role, field="role", blank_ok=False) -> str:
    if blank_ok and not role:
        return ""
    if role not in ROLES:
        raise ValidationError({field: [f"must be one of {', '.join(ROLES)}"]})
    return role


def _user(username, actor=None):
    """The user named ``username``. A non-staff actor (a tenant owner) may name only
    users who already share a tenant with them; for anyone else the answer is the same
    as for a name nobody has, so an owner never learns who has an account elsewhere
    (they invite by e-mail instead)."""
    User = get_user_model()
    user = User.objects.filter(**{User.USERNAME_FIELD: username}).first() if username else None
    acting = getattr(actor, "user", None)
    if (user is not None and getattr(acting, "is_authenticated", False) and not is_staff(acting)
            and not Membership.objects.filter(user=user, tenant__memberships__user=acting).exists()):
        user = None
    if user is None:
        if not username:
            raise ValidationError({"user": ["This field is required."]})
        raise ValidationError({"user": [f"no user named {username!r} among the members of your tenants; "
                                        "invite them by e-mail instead"]})
    return user


# ------------------------------------------------------------------ tokens

def issue_token(actor, user, *, tenant: Tenant | None = None, role: str = "", name: str = "",
                note: str = "") -> tuple[ApiToken, str]:
    """A new token for ``user`` (per tenant with ``role`` when ``tenant`` is given);
    returns (row, plaintext): the plaintext is shown once and never stored."""
    if tenant is None and role:
        raise ValidationError({"role": ["only a per-tenant token has a role"]})
    if tenant is not None:
        role = _check_role(role or Membership.VIEWER)
    if len(name or "") > 100:
        raise ValidationError({"name": ["at most 100 characters"]})
    with transaction.atomic():
        row, plain = ApiToken.issue(user, tenant=tenant, role=role, name=name or "")
        record(actor, "issue", row, after={"user": user.pk, "tenant": tenant.slug if tenant else None,
                                           "role": row.role, "prefix": row.prefix}, note=note, tenant=tenant)
    return row, plain


def revoke_token(actor, token: ApiToken, note: str = "") -> ApiToken:
    """Revoke ``token`` (idempotent); the row stays for the audit trail."""
    with transaction.atomic():
        if token.revoked is None:
            token.revoked = timezone.now()
            token.save(update_fields=["revoked"])
            record(actor, "revoke", token, after={"revoked": token.revoked.isoformat()}, note=note,
                   tenant=token.tenant if token.tenant_id else None)
    return token


# ------------------------------------------------------------------ memberships

def _membership_view(member: Membership) -> dict:
    return {"user": member.user.get_username(), "tenant": member.tenant.slug, "role": member.role}


def add_member(actor, tenant: Tenant, username: str, role: str, note: str = "") -> Membership:
    role = _check_role(role)
    user = _user(username, actor)
    with transaction.atomic():
        if Membership.objects.filter(user=user, tenant=tenant).exists():
            raise ValidationError({"user": [f"{username} is already a member of tenant {tenant.slug}"]})
        member = Membership.objects.create(user=user, tenant=tenant, role=role)
        record(actor, "create", member, after=_membership_view(member), note=note, tenant=tenant)
    return member


def change_member(actor, member: Membership, role: str, note: str = "") -> Membership:
    role = _check_role(role)
    with transaction.atomic():
        before = _membership_view(member)
        member.role = role
        member.save(update_fields=["role"])
        record(actor, "update", member, before=before, after=_membership_view(member), note=note,
               tenant=member.tenant)
    return member


def remove_member(actor, member: Membership, note: str = "") -> None:
    """Remove the membership; the user's API tokens for that tenant are revoked with it."""
    with transaction.atomic():
        before = _membership_view(member)
        pk = member.pk
        member.delete()
        record(actor, "delete", member, before=before, note=note, tenant=member.tenant, object_id=pk)
        for token in ApiToken.objects.filter(user_id=member.user_id, tenant_id=member.tenant_id,
                                             revoked__isnull=True):
            revoke_token(actor, token, note=f"{before['user']} is no longer a member of {before['tenant']}")
