"""Backup and restore: everything needed to rebuild the control plane on an empty one.

A backup keeps the configuration rows as stored, ids included: the snapshots the
nodes run name objects by id, so the restored installation compiles to the same
sha256 and a node that reconnects with its token gets the very configuration it had.
It holds tenants, delegations, certificates with their private keys encrypted as
stored, pools, targets, routes, the platform error pages, alert channels (secrets encrypted as stored), the
ACME accounts (keys encrypted as stored) and each route's order state, config
versions, quarantines, and node registrations with their token hashes; users and
memberships by username (and single sign-on links), with password hashes and API token hashes only when asked
(and then two-factor too: app secrets and recovery-code seeds encrypted as stored, security keys).

Encrypted values stay encrypted with the installation's ``SWITCHYARD_ENCRYPTION_KEY``
(or its ``var/encryption_key`` file): restore needs the same key, and refuses (changing
nothing) when a value does not decrypt.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from allauth.mfa.models import Authenticator
from allauth.socialaccount.models import SocialAccount
from django.contrib.auth import get_user_model
from django.core import serializers
from django.core.management.color import no_style
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from controlplane.acme.models import Account as AcmeAccount
from controlplane.acme.models import Order as AcmeOrder
from controlplane.alerts.models import AlertChannel
from controlplane import crypto
from controlplane.health.schedules import sync_schedules
from controlplane.proxy.models import AccessList, Certificate, ErrorPage, Pool, Route, Target
from controlplane.publishing import compiler, publisher
from controlplane.publishing.models import ConfigVersion, Node, Quarantine
from controlplane.tenancy.models import ApiToken, Delegation, Membership, Tenant
from dataplane import schema

FORMAT = 1
# In dependency order: a row only refers to rows before it.
ROW_MODELS = (Tenant, Delegation, Certificate, AccessList, ErrorPage, Pool, Target, Route, AlertChannel, AcmeAccount,
              AcmeOrder, Node, ConfigVersion, Quarantine)
USER_FIELDS = ("username", "email", "first_name", "last_name", "is_active", "is_staff", "is_superuser")
TOKEN_FIELDS = ("name", "role", "token_hash", "prefix")


class RestoreError(ValueError):
    pass


@dataclass
class Restored:
    counts: dict
    version: int | None
    sha256: str | None
    compiled_sha256: str

    @property
    def same_hash(self) -> bool:
        return self.sha256 == self.compiled_sha256


def _label(model) -> str:
    return model._meta.label_lower


# ------------------------------------------------------------------ backup

def backup(*, with_passwords: bool = False) -> dict:
    User = get_user_model()
    users = User.objects.order_by(User.USERNAME_FIELD)
    data = {
        "switchyard_backup": FORMAT,
        "created": timezone.now().isoformat(),
        "with_passwords": with_passwords,
        "rows": {_label(m): json.loads(serializers.serialize("json", m.objects.order_by("pk"))) for m in ROW_MODELS},
        "users": [_user(u, with_passwords) for u in users],
        "memberships": [{"user": m.user.get_username(), "tenant": m.tenant.slug, "role": m.role}
                        for m in Membership.objects.select_related("user", "tenant").order_by("pk")],
        # single sign-on: which provider identity (its sub) signs in as which user
        "sso_links": [{"user": a.user.get_username(), "provider": a.provider, "uid": a.uid}
                      for a in SocialAccount.objects.select_related("user").order_by("pk")],
    }
    if with_passwords:
        data["api_tokens"] = [_token(t) for t in ApiToken.objects.select_related("user", "tenant").order_by("pk")]
        data["two_factor"] = [_authenticator(a) for a in Authenticator.objects.select_related("user").order_by("pk")]
    return data


def _user(user, with_passwords: bool) -> dict:
    out = {name: getattr(user, name) for name in USER_FIELDS}
    out["date_joined"] = user.date_joined.isoformat()
    if with_passwords:
        out["password"] = user.password
    return out


def _token(token: ApiToken) -> dict:
    return {"user": token.user.get_username(), "tenant": token.tenant.slug if token.tenant_id else None,
            **{name: getattr(token, name) for name in TOKEN_FIELDS},
            "revoked": token.revoked.isoformat() if token.revoked else None}


# ------------------------------------------------------------------ restore

def restore(data: dict) -> Restored:
    """Rebuild an empty installation from ``data``; all of it or nothing."""
    if not isinstance(data, dict) or data.get("switchyard_backup") != FORMAT:
        raise RestoreError(f"not a Switchyard backup (format {FORMAT})")
    present = [m._meta.verbose_name_plural for m in ROW_MODELS if m.objects.exists()]
    if present:
        raise RestoreError(f"restore needs an empty installation, and this one has {', '.join(present)}")
    with transaction.atomic():
        publisher.lock()
        counts = _rows(data["rows"])
        Node.objects.update(connected=False, connected_since=None)
        counts["users"] = _users(data.get("users") or [])
        counts["memberships"] = _memberships(data.get("memberships") or [])
        counts["single sign-on links"] = _sso_links(data.get("sso_links") or [])
        counts["api tokens"] = _tokens(data.get("api_tokens") or [])
        counts["two-factor authenticators"] = _authenticators(data.get("two_factor") or [])
        _reset_sequences()
        _check_encrypted()
        sync_schedules()
    latest = publisher.current_version()
    return Restored(counts, latest.number if latest else None, latest.sha256 if latest else None,
                    schema.snapshot_hash(compiler.compile_snapshot()))


def _rows(rows: dict) -> dict:
    counts = {}
    for model in ROW_MODELS:
        found = rows.get(_label(model)) or []
        for obj in serializers.deserialize("json", json.dumps(found)):
            obj.save()
        counts[str(model._meta.verbose_name_plural)] = len(found)
    return counts


def _users(users: list[dict]) -> int:
    """Users not yet present are created (without a usable password unless the backup
    has its hash); a user already present is left as it is."""
    User = get_user_model()
    created = 0
    for data in users:
        if User.objects.filter(**{User.USERNAME_FIELD: data["username"]}).exists():
            continue
        user = User(**{name: data[name] for name in USER_FIELDS}, date_joined=parse_datetime(data["date_joined"]))
        if data.get("password"):
            user.password = data["password"]
        else:
            user.set_unusable_password()
        user.save()
        created += 1
    return created


def _user_named(username: str):
    User = get_user_model()
    return User.objects.get(**{User.USERNAME_FIELD: username})


def _memberships(memberships: list[dict]) -> int:
    for data in memberships:
        Membership.objects.get_or_create(user=_user_named(data["user"]), tenant=Tenant.objects.get(slug=data["tenant"]),
                                         defaults={"role": data["role"]})
    return len(memberships)


def _sso_links(links: list[dict]) -> int:
    for data in links:
        SocialAccount.objects.get_or_create(provider=data["provider"], uid=data["uid"],
                                            defaults={"user": _user_named(data["user"])})
    return len(links)


def _tokens(tokens: list[dict]) -> int:
    for data in tokens:
        tenant = Tenant.objects.get(slug=data["tenant"]) if data["tenant"] else None
        revoked = parse_datetime(data["revoked"]) if data["revoked"] else None
        ApiToken.objects.create(user=_user_named(data["user"]), tenant=tenant, revoked=revoked,
                                **{name: data[name] for name in TOKEN_FIELDS})
    return len(tokens)


def _authenticator(row: Authenticator) -> dict:
    return {"user": row.user.get_username(), "type": row.type, "data": row.data,
            "created_at": row.created_at.isoformat(),
            "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None}


def _authenticators(rows: list[dict]) -> int:
    """Two-factor rows of users who have none yet (a user already enrolled keeps theirs);
    the app secrets and recovery seeds must decrypt with this installation's key."""
    created, enrolled = 0, set(Authenticator.objects.values_list("user_id", flat=True))
    for data in rows:
        user = _user_named(data["user"])
        if user.pk in enrolled or data["type"] not in Authenticator.Type.values or not isinstance(data["data"], dict):
            continue
        secret = data["data"].get("secret") or data["data"].get("seed")
        if data["type"] != Authenticator.Type.WEBAUTHN:
            try:
                crypto.decrypt(secret or "")
            except crypto.DecryptionError:
                raise RestoreError(f"the two-factor secret of user {data['user']} cannot be decrypted: restore with "
                                   "the SWITCHYARD_ENCRYPTION_KEY of the backed-up installation") from None
        last_used = parse_datetime(data["last_used_at"]) if data["last_used_at"] else None
        Authenticator.objects.create(user=user, type=data["type"], data=data["data"], last_used_at=last_used,
                                     created_at=parse_datetime(data["created_at"]) or timezone.now())
        created += 1
    return created


def _reset_sequences() -> None:
    """Rows came with their ids: new rows must be numbered after them (PostgreSQL)."""
    statements = connection.ops.sequence_reset_sql(no_style(), [*ROW_MODELS, Membership, ApiToken, get_user_model()])
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


def _check_encrypted() -> None:
    encrypted = [(f"certificate {c.name}", c.private_key_encrypted) for c in Certificate.objects.all()]
    encrypted += [(f"alert channel {c.name}", c.secret_encrypted)
                  for c in AlertChannel.objects.exclude(secret_encrypted="")]
    encrypted += [(f"ACME account of {a.directory}", a.key_encrypted) for a in AcmeAccount.objects.all()]
    for what, value in encrypted:
        try:
            crypto.decrypt(value)
        except crypto.DecryptionError:
            raise RestoreError(f"the stored secret of {what} cannot be decrypted: restore with the "
                               "SWITCHYARD_ENCRYPTION_KEY (or var/encryption_key) of the backed-up installation") \
                from None
