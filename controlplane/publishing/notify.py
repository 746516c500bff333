"""Hints to connected data-plane consumers that the config changed.

Group messages are only hints (at-most-once); the consumers always read the
truth from the database, and heartbeats repair anything lost. With the in-memory
channel layer (embedded mode) every hint is also forwarded to the Daphne process of
the same installation as one datagram (``localhints``), so that changes stored by
other processes (Celery, ``manage.py``, scripts) reach the connected nodes at once.
"""
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from controlplane.publishing import localhints

DATAPLANE_GROUP = "switchyard.dataplane"
CONFIG_CHANGED = "config.changed"    # handled by DataPlaneConsumer.config_changed
HEALTH_CHANGED = "health.changed"    # handled by DataPlaneConsumer.health_changed

# Dashboard live views (/ws/live/) listen here; hints only, harmless when nobody listens.
LIVE_GROUP = "switchyard.live"
TRAFFIC_UPDATED = "traffic.updated"  # a node's traffic report was stored


def _send(message: dict) -> None:
    layer = get_channel_layer()
    if layer is not None:
        # Embedded mode: the same hint to this installation's Daphne process, as one
        # datagram (a no-op with a cross-process layer or in that process; never raises).
        localhints.forward(message, layer)
        async_to_sync(layer.group_send)(DATAPLANE_GROUP, message)


def config_changed_on_commit() -> None:
    """Call inside the transaction that stored a new ConfigVersion."""
    transaction.on_commit(lambda: _send({"type": CONFIG_CHANGED}))


def health_changed_on_commit(targets: dict[int, bool]) -> None:
    """Call inside the transaction that changed ``Target.healthy``.

    Sends ``{"type": HEALTH_CHANGED, "targets": {"<target id>": bool}}`` to every
    data-plane consumer once the transaction commits (nothing on rollback).
    """
    if not targets:
        return
    message = {"type": HEALTH_CHANGED, "targets": {str(k): bool(v) for k, v in targets.items()}}
    # robust: a hint that cannot be sent (at-most-once) must not fail the caller.
    transaction.on_commit(lambda: _send(message), robust=True)


async def traffic_updated() -> None:
    """Tell live views that new traffic figures are stored (from async code)."""
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(LIVE_GROUP, {"type": TRAFFIC_UPDATED})
        localhints.forward({"type": TRAFFIC_UPDATED}, layer)
