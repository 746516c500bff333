"""The channel layer as an optional helper: consumers whose group messages are only
hints keep serving their WebSocket while the layer (Redis) is down or frozen.

``LayerLink`` stands in for the layer in one consumer (bounded calls, groups rejoined
after a failure, messages received by a background task); ``LayerTolerantMixin`` runs
a consumer's dispatch loop on it; ``layer_status`` logs each outage once per process.
"""
from __future__ import annotations

import asyncio
import logging
import time

from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch

log = logging.getLogger("switchyard.sync")

# One channel-layer call (join, leave, send) waits at most this long.
LAYER_TIMEOUT = 2.0
# Waits between attempts to rejoin the groups after the layer failed: doubling, capped.
REJOIN_FIRST, REJOIN_MAX = 0.5, 5.0
# Group messages received but not yet handled by the consumer.
LAYER_INBOX = 100


class LayerStatus:
    """Logs each outage of the channel layer once per process (its start and its end),
    however many consumers notice it."""

    def __init__(self):
        self.down_since: float | None = None

    def failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("sync: the channel layer is unreachable (%r); nodes are served from the "
                        "database until it is back", exc)

    def recovered(self) -> None:
        if self.down_since is not None:
            log.info("sync: the channel layer is reachable again after %.1f s",
                     time.monotonic() - self.down_since)
            self.down_since = None


layer_status = LayerStatus()


class LayerLink:
    """One consumer's use of the channel layer, which may be down or frozen.

    Stands in for the layer as ``consumer.channel_layer``: joins and leaves never raise
    and never wait past ``LAYER_TIMEOUT``; the groups joined are remembered and joined
    again after a failure (a restarted Redis has lost them); sends wait at most
    ``LAYER_TIMEOUT`` and raise on failure; group messages are received by a background
    task into a queue that ``receive`` reads.
    """

    def __init__(self, layer, channel: str):
        self.layer, self.channel = layer, channel
        self.groups: set[str] = set()   # wanted
        self.joined: set[str] = set()   # confirmed by the layer since its last failure
        self.inbox: asyncio.Queue = asyncio.Queue(LAYER_INBOX)
        self.receiving = False
        self.task: asyncio.Task | None = None

    @property
    def in_groups(self) -> bool:
        """Every wanted group joined: as far as this consumer knows, the layer works."""
        return self.groups <= self.joined

    def start(self) -> None:
        self.task = asyncio.create_task(self._pump())

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def receive(self) -> dict:
        return await self.inbox.get()

    async def group_add(self, group: str, channel: str) -> None:
        self.groups.add(group)
        try:
            await asyncio.wait_for(self.layer.group_add(group, channel), LAYER_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - the background task joins it later
            layer_status.failed(exc)
            self._rejoin_soon()
            return
        self.joined.add(group)
        layer_status.recovered()

    async def group_discard(self, group: str, channel: str) -> None:
        self.groups.discard(group)
        if group not in self.joined:
            return
        self.joined.discard(group)
        try:
            await asyncio.wait_for(self.layer.group_discard(group, channel), LAYER_TIMEOUT)
        except Exception:  # noqa: BLE001 - a stale member only costs the layer a few expiring messages
            pass

    async def group_send(self, group: str, message: dict) -> None:
        await asyncio.wait_for(self.layer.group_send(group, message), LAYER_TIMEOUT)

    async def send(self, channel: str, message: dict) -> None:
        await asyncio.wait_for(self.layer.send(channel, message), LAYER_TIMEOUT)

    def _rejoin_soon(self) -> None:
        """A receive waiting on a frozen layer would hold back the rejoin: restart the pump."""
        if self.receiving:
            self.receiving = False
            self.task.cancel()
            self.start()

    async def _pump(self) -> None:
        delay = REJOIN_FIRST
        while True:
            try:
                await self._rejoin()
                self.receiving = True
                try:
                    message = await self.layer.receive(self.channel)
                finally:
                    if self.task is asyncio.current_task():  # not a pump replaced meanwhile
                        self.receiving = False
            except Exception as exc:  # noqa: BLE001 - hints are optional; try again later
                layer_status.failed(exc)
                self.joined.clear()
                await asyncio.sleep(delay)
                delay = min(2 * delay, REJOIN_MAX)
                continue
            delay = REJOIN_FIRST
            layer_status.recovered()
            await self.inbox.put(message)

    async def _rejoin(self) -> None:
        missing = self.groups - self.joined
        for group in missing:
            await asyncio.wait_for(self.layer.group_add(group, self.channel), LAYER_TIMEOUT)
            self.joined.add(group)
        if missing:
            layer_status.recovered()


class LayerTolerantMixin:
    """For an ``AsyncWebsocketConsumer`` whose group messages are only hints: the
    WebSocket is served whether the channel layer works, is down or hangs.

    Replaces ``AsyncConsumer.__call__``, whose dispatch loop ends the consumer when
    the layer's receive raises; here the layer is reached through a ``LayerLink``.
    """

    async def __call__(self, scope, receive, send):
        self.scope = scope
        self.base_send = send
        layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await layer.new_channel()
        self.channel_layer = LayerLink(layer, self.channel_name)
        self.channel_layer.start()
        try:
            await await_many_dispatch([receive, self.channel_layer.receive], self.dispatch)
        except StopConsumer:
            pass
        finally:
            self.channel_layer.close()
