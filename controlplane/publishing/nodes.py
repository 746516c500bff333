"""Registering and revoking data-plane nodes (audited; no config version)."""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from controlplane.audit.services import record

from .models import Node


def register_node(actor, name: str, note: str = "") -> tuple[Node, str]:
    """A new node; returns (node, plaintext token). The token is shown only once."""
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": ["This field is required."]})
    if len(name) > Node._meta.get_field("name").max_length:
        raise ValidationError({"name": ["at most 100 characters"]})
    with transaction.atomic():
        if Node.objects.filter(name=name).exists():
            raise ValidationError({"name": [f"a node named {name} already exists"]})
        node, token = Node.register(name)
        record(actor, "register", node, after={"name": name}, note=note)
    return node, token


def revoke_node(actor, node: Node, note: str = "") -> Node:
    """Revoke a node's token: it can no longer connect (idempotent)."""
    with transaction.atomic():
        if not node.revoked:
            node.revoked = True
            node.connected = False
            node.save(update_fields=["revoked", "connected"])
            record(actor, "revoke", node, after={"revoked": True}, note=note)
    return node
