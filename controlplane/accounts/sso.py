"""Single sign-on with an OpenID Connect provider: the rules, not the pages.

django-allauth's ``socialaccount`` (provider ``openid_connect``, PKCE on, configured
from ``SWITCHYARD_OIDC_*`` in settings, no database ``SocialApp`` row) speaks the
protocol: discovery, the redirect, the code exchange, the ID token's signature,
issuer, audience and nonce. What an identity it returns may do is decided here:

Which account (``resolve``):
1. the account already linked to this identity (the provider's ``sub``);
2. else the one account with the same e-mail address, if the provider says the
   address is verified (``email_verified: true``), the account is neither a superuser
   nor the break-glass account, and it is not linked to another identity yet; the
   identity is linked to it from then on;
3. else a new account (username from ``preferred_username`` or the address, made
   unique; the address is stored only when verified).
A deactivated account is refused at every step, and so is a new identity whose
verified address belongs to a deactivated, superuser, break-glass or already linked
account (no second account next to one an operator switched off or kept local).

Claim mapping (``apply_mapping``), at every SSO sign-in, from the claim
``SWITCHYARD_OIDC_CLAIM`` (a list or a string):
- ``SWITCHYARD_OIDC_STAFF_VALUES`` set: the account is staff exactly when the claim
  holds one of them (granted and taken away); unset, SSO never changes staff.
  Superuser accounts are never changed (and never signed in through SSO by e-mail).
- ``SWITCHYARD_OIDC_TENANT_ROLES`` (``value:tenant-slug:role,...``): every tenant named
  there is managed by the provider: the account is a member with the highest role of
  the rules whose value the claim holds, and is removed from it when none matches,
  however the membership was made. Tenants not named are left alone.

``SWITCHYARD_LOCAL_PASSWORDS=off``: password sign-in (dashboard, admin, password
reset, choosing a password for an invitation) is refused for every account except
``SWITCHYARD_BREAK_GLASS_USER``.
"""
from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.checks import Error, register
from django.db import transaction

from controlplane.audit.services import Actor, record
from controlplane.tenancy.models import Membership, Tenant

log = logging.getLogger("switchyard.accounts")
PROVIDER_ID = "sso"  # allauth's provider_id: the callback is /accounts/oidc/sso/login/callback/
RANK = {Membership.VIEWER: 1, Membership.EDITOR: 2, Membership.OWNER: 3}
MAX_CLAIM_VALUES = 500
User = get_user_model()


class Refused(Exception):
    """This identity may not sign in; ``message`` is shown to the person."""

    def __init__(self, message: str, user=None):
        super().__init__(message)
        self.message = message
        self.user = user


# ------------------------------------------------------------------ configuration

def enabled() -> bool:
    return bool(settings.SWITCHYARD_OIDC_ISSUER)


def display_name() -> str:
    return settings.SWITCHYARD_OIDC_NAME


def break_glass_username() -> str:
    return settings.SWITCHYARD_BREAK_GLASS_USER


def local_passwords() -> bool:
    return settings.SWITCHYARD_LOCAL_PASSWORDS


def _key(username: str) -> str:
    return unicodedata.normalize("NFKC", username or "").strip().casefold()


def is_break_glass(username: str) -> bool:
    name = break_glass_username()
    return bool(name) and _key(username) == _key(name)


def password_allowed(username: str) -> bool:
    """Whether a password may sign in (or be set) for ``username``."""
    return local_passwords() or is_break_glass(username)


@dataclass(frozen=True)
class TenantRule:
    value: str
    tenant: str
    role: str


def tenant_rules(text: str | None = None) -> list[TenantRule]:
    """``value:tenant-slug:role`` items, comma-separated; the value may itself hold
    colons (the last two fields are the tenant and the role). ValueError names a bad item."""
    text = settings.SWITCHYARD_OIDC_TENANT_ROLES if text is None else text
    rules = []
    for item in (part.strip() for part in (text or "").split(",")):
        if not item:
            continue
        parts = item.rsplit(":", 2)
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise ValueError(f"{item!r}: expected value:tenant-slug:role")
        value, tenant, role = (p.strip() for p in parts)
        if role not in RANK:
            raise ValueError(f"{item!r}: the role must be one of {', '.join(RANK)}")
        if not re.fullmatch(r"[-a-zA-Z0-9_]+", tenant):
            raise ValueError(f"{item!r}: {tenant!r} is not a tenant slug")
        rules.append(TenantRule(value, tenant, role))
    return rules


def staff_values() -> set[str]:
    return set(settings.SWITCHYARD_OIDC_STAFF_VALUES)


@register()
def check_settings(app_configs=None, **kwargs):
    errors = []
    try:
        tenant_rules()
    except ValueError as exc:
        errors.append(Error(f"SWITCHYARD_OIDC_TENANT_ROLES: {exc}", id="switchyard.E_SSO1"))
    if enabled() and not settings.SWITCHYARD_OIDC_CLIENT_ID:
        errors.append(Error("SWITCHYARD_OIDC_ISSUER is set but SWITCHYARD_OIDC_CLIENT_ID is empty",
                            id="switchyard.E_SSO2"))
    return errors


# ------------------------------------------------------------------ the identity

@dataclass
class Identity:
    uid: str
    email: str
    email_verified: bool
    username: str
    claim: set[str]


def claim_values(data: dict) -> set[str]:
    raw = data.get(settings.SWITCHYARD_OIDC_CLAIM) if settings.SWITCHYARD_OIDC_CLAIM else None
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)):
        return set()
    return {v for v in raw[:MAX_CLAIM_VALUES] if isinstance(v, str)}


def identity_from(sociallogin) -> Identity:
    """What allauth verified: userinfo merged over the ID token's claims."""
    extra = sociallogin.account.extra_data or {}
    data = {}
    if isinstance(extra.get("id_token"), dict):
        data.update(extra["id_token"])
    if isinstance(extra.get("userinfo"), dict):
        data.update(extra["userinfo"])
    email = data.get("email") if isinstance(data.get("email"), str) else ""
    verified = data.get("email_verified") in (True, "true", "True", 1)
    username = data.get("preferred_username") if isinstance(data.get("preferred_username"), str) else ""
    return Identity(uid=str(sociallogin.account.uid), email=email.strip()[:254],
                    email_verified=bool(email and verified), username=username.strip(), claim=claim_values(data))


def _free_username(identity: Identity) -> str:
    base = identity.username or identity.email.split("@")[0] or "sso-user"
    base = re.sub(r"[^\w.@+-]", "-", base)[:140].strip("-") or "sso-user"
    candidate, n = base, 1
    while User.objects.filter(username__iexact=candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _user_view(user) -> dict:
    return {"username": user.get_username(), "email": user.email, "is_active": user.is_active,
            "is_staff": user.is_staff}


def resolve(sociallogin, source_address: str | None = None):
    """The account this verified identity signs in as (linking or creating it, see the
    module's rules); Refused when it may not. Saves the allauth ``SocialAccount`` link."""
    from allauth.socialaccount.models import SocialAccount

    identity = identity_from(sociallogin)
    with transaction.atomic():
        linked = SocialAccount.objects.select_related("user").filter(
            provider=sociallogin.account.provider, uid=identity.uid).first()
        if linked is not None:
            user = linked.user
            if not user.is_active:
                raise Refused("This account is deactivated. Ask an operator.", user)
            linked.extra_data = sociallogin.account.extra_data
            linked.save(update_fields=["extra_data"])
            return user
        user = None
        if identity.email_verified:
            same = list(User.objects.filter(email__iexact=identity.email).order_by("pk")[:2])
            if len(same) > 1:
                raise Refused("More than one account has your e-mail address; ask an operator to link yours.")
            if same:
                user = same[0]
                if not user.is_active:
                    raise Refused("This account is deactivated. Ask an operator.", user)
                if user.is_superuser or is_break_glass(user.get_username()):
                    raise Refused("The account with your e-mail address signs in with its password only.", user)
                if SocialAccount.objects.filter(user=user, provider=sociallogin.account.provider).exists():
                    raise Refused("The account with your e-mail address is linked to another identity "
                                  "of this provider.", user)
        created = user is None
        if created:
            user = User.objects.create_user(_free_username(identity),
                                            email=identity.email if identity.email_verified else "")
            user.set_unusable_password()
            user.save(update_fields=["password"])
        actor = Actor(user=user, source_address=source_address)
        SocialAccount.objects.create(user=user, provider=sociallogin.account.provider, uid=identity.uid,
                                     extra_data=sociallogin.account.extra_data)
        if created:
            record(actor, "create", user, after=_user_view(user), note="single sign-on")
        record(actor, "link_sso", user, after={"username": user.get_username(), "subject": identity.uid[:200]},
               note="single sign-on")
    return user


def apply_mapping(user, identity: Identity, source_address: str | None = None) -> list[str]:
    """Staff flag and memberships of the mapped tenants from the claim (see the module's
    rules); returns what changed, for the log."""
    actor = Actor(user=user, source_address=source_address)
    changes = []
    with transaction.atomic():
        values = staff_values()
        if values and not user.is_superuser:
            staff = bool(values & identity.claim)
            if staff != user.is_staff:
                before = _user_view(user)
                user.is_staff = staff
                user.save(update_fields=["is_staff"])
                record(actor, "update", user, before=before, after=_user_view(user), note="single sign-on mapping")
                changes.append(f"staff={staff}")
        wanted: dict[str, str | None] = {}
        for rule in tenant_rules():
            current = wanted.get(rule.tenant)
            if rule.value in identity.claim and (current is None or RANK[rule.role] > RANK[current]):
                wanted[rule.tenant] = rule.role
            else:
                wanted.setdefault(rule.tenant, None)
        tenants = {t.slug: t for t in Tenant.objects.filter(slug__in=list(wanted))}
        for slug, role in wanted.items():
            tenant = tenants.get(slug)
            if tenant is None:
                log.warning("SSO mapping names tenant %s, which does not exist", slug)
                continue
            member = Membership.objects.select_for_update().filter(user=user, tenant=tenant).first()
            view = {"user": user.get_username(), "tenant": slug}
            if role is None and member is not None:
                before, pk = {**view, "role": member.role}, member.pk
                member.delete()
                record(actor, "delete", member, before=before, note="single sign-on mapping", tenant=tenant,
                       object_id=pk)
                changes.append(f"-{slug}")
            elif role is not None and member is None:
                member = Membership.objects.create(user=user, tenant=tenant, role=role)
                record(actor, "create", member, after={**view, "role": role}, note="single sign-on mapping",
                       tenant=tenant)
                changes.append(f"+{slug}:{role}")
            elif role is not None and member.role != role:
                before = {**view, "role": member.role}
                member.role = role
                member.save(update_fields=["role"])
                record(actor, "update", member, before=before, after={**view, "role": role},
                       note="single sign-on mapping", tenant=tenant)
                changes.append(f"{slug}:{role}")
    return changes


def check_invitation(inv, identity: Identity) -> None:
    """An invitation accepted through SSO: the provider's verified address must be the
    invited one."""
    if not identity.email_verified:
        raise Refused(f"This invitation is for {inv.email}, and {display_name()} did not confirm "
                      "your e-mail address. Ask the tenant's owner.")
    if identity.email.casefold() != inv.email.casefold():
        raise Refused(f"This invitation is for {inv.email}, but you signed in with {display_name()} as "
                      f"{identity.email}. Sign in with the invited address, or ask the tenant's owner "
                      "to invite this one.")
