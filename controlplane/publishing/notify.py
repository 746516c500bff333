"""Hints to connected data-plane consumers that the config changed.

Group messages are only hints (at-most-once); the consumers always read the
truth from the database, and heartbeats repair anything lost. With the in-memory
channel layer (embedded mode) every hint is also forwarded to the Daphne process of
the same installation as one datagram (``localhints``), so that changes stored by
other processes (Celery, ``manage.py``, scripts) reach the connected nodes at once.

A hint that cannot be sent (Redis down or frozen) never fails the caller: the change is
committed already and reaches the nodes by their heartbeat (10 s) or the consumers'
poll. Each lost hint is logged with the number lost by this process so far, and a
send waits at most ``HINT_SEND_TIMEOUT`` seconds, so a frozen Redis cannot hold a
request (or the thread that runs Django's sync views) for its socket timeout.
"""
import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from controlplane.publishing import localhints
from controlplane.publishing.hints import (
    CONFIG_CHANGED,
    DATAPLANE_GROUP,
    HEALTH_CHANGED,
    LIVE_GROUP,
    TRAFFIC_UPDATED,
)

log = logging.getLogger("switchyard.hints")

HINT_SEND_TIMEOUT = 2.0

hints_lost = 0  # by this process, since it started; reported in each loss's warning


async def _group_send(group: str, message: dict) -> None:
    """Send one hint to ``group``; never raises, never waits past ``HINT_SEND_TIMEOUT``."""
    global hints_lost
    try:
        layer = get_channel_layer()
        if layer is None:
            return
        # Embedded mode: the same hint to this installation's Daphne process, as one
        # datagram (a no-op with a cross-process layer or in that process; never raises).
        localhints.forward(message, layer)
        await asyncio.wait_for(layer.group_send(group, message), HINT_SEND_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - a hint is at-most-once; the database is the truth
        hints_lost += 1
        log.warning("hints: %s hint not sent to the channel layer (%r); nodes get the change from the "
                    "database by heartbeat or poll. Hints lost by this process: %d",
                    message.get("type"), exc, hints_lost)


def _send(message: dict) -> None:
    async_to_sync(_group_send)(DATAPLANE_GROUP, message)


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
    transaction.on_commit(lambda: _send(message))


async def traffic_updated() -> None:
    """Tell live views that new traffic figures are stored (from async code)."""
    await _group_send(LIVE_GROUP, {"type": TRAFFIC_UPDATED})
