"""Who did what: the ``Actor`` behind a change and ``record`` for the audit log."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .models import AuditEntry


@dataclass(frozen=True)
class Actor:
    """The person or token behind a change, and where the request came from."""
    user: Any = None
    token_prefix: str = ""
    source_address: str | None = None

    @property
    def label(self) -> str:
        if self.token_prefix:
            return f"token:{self.token_prefix}"
        if self.user is not None and getattr(self.user, "is_authenticated", False):
            return self.user.get_username()
        return "system"

    @classmethod
    def system(cls) -> "Actor":
        return cls()

    @classmethod
    def from_request(cls, request) -> "Actor":
        """The request's user and address; for a request authenticated by an API token
        (``request.auth``, as the REST API sets it) the token's prefix names the actor."""
        forwarded = request.META.get("REMOTE_ADDR") or None
        token = getattr(request, "auth", None)
        prefix = getattr(token, "prefix", "") or ""
        return cls(user=getattr(request, "user", None), token_prefix=prefix, source_address=forwarded)


def _object_fields(obj) -> tuple[str, str, str]:
    if obj is None:
        return "", "", ""
    return obj._meta.model_name, str(obj.pk or ""), str(obj)[:300]


def _tenant_of(obj):
    if obj is None:
        return None
    if obj._meta.model_name == "tenant":
        return obj if obj.pk else None
    return getattr(obj, "tenant", None) if getattr(obj, "tenant_id", None) else None


def record(actor: Actor | None, action: str, obj=None, before=None, after=None, note: str = "",
           tenant=None, config_version: int | None = None, object_id=None) -> AuditEntry:
    """Write one audit entry. ``config_version`` is the version this change published;
    a change that published none (members, tokens, channels, nodes) carries none, so it
    never links to (and shows) a version someone else made.
    ``object_id`` names a row that was just deleted (its instance has no pk any more)."""
    actor = actor or Actor.system()
    object_type, pk, object_repr = _object_fields(obj)
    object_id = str(object_id) if object_id is not None else pk
    return AuditEntry.objects.create(
        actor=actor.label[:200], tenant=tenant if tenant is not None else _tenant_of(obj),
        object_type=object_type, object_id=object_id, object_repr=object_repr, action=action,
        before=before, after=after, note=note or "", source_address=actor.source_address,
        config_version=config_version,
    )
