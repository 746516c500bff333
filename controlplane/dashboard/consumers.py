"""The dashboard's live WebSocket, ``/ws/live/``.

Session-authenticated (``AuthMiddlewareStack`` wraps only this route in asgi.py)
and scoped like every page: a tenant member gets the health of their tenants'
targets and their tenants' traffic only. Node status is platform-wide (every
tenant's routes run on the same nodes), without NACK details for non-staff.

The consumer pushes one ``{"type": "state", ...}`` message at connect and again
whenever something in it changed. The truth is read from the database: every
``SWITCHYARD_LIVE_POLL_SECONDS`` (cheap queries: nodes, the health generation, the
newest version number) and at once on a group hint (``notify.CONFIG_CHANGED`` and
``notify.HEALTH_CHANGED`` arrive here too, through the data-plane group) — hints
only speed things up; in embedded mode hints from other processes come through the
datagram bridge (``controlplane.publishing.localhints``), which is at-most-once too.
A channel layer that is down or frozen therefore costs only the hints
(``LayerTolerantMixin``): the page keeps its connection and its polled state.
"""
from __future__ import annotations

import asyncio
import json
import logging

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Max

from controlplane.health import summary as health_summary
from controlplane.proxy.models import Target
from controlplane.publishing import localhints, notify
from controlplane.publishing.layerlink import LayerTolerantMixin
from controlplane.publishing.models import ConfigVersion, Node
from controlplane.tenancy.access import Principal

from . import telemetry

log = logging.getLogger("switchyard.dashboard")
LIVE_GROUP = getattr(notify, "LIVE_GROUP", "switchyard.live")
TRAFFIC_EVERY = 5.0  # seconds: traffic figures change with node reports (every 10 s), not faster


class LiveConsumer(LayerTolerantMixin, AsyncWebsocketConsumer):
    groups_joined: tuple = ()

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=4401)
            return
        self.user_id = user.pk
        self.last_sent = None
        self.wake = asyncio.Event()
        await self.accept()
        self.groups_joined = (notify.DATAPLANE_GROUP, LIVE_GROUP)
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        localhints.ensure_receiver(self.channel_layer.layer)  # embedded mode: hints from other processes
        self.task = asyncio.create_task(self.loop())

    async def disconnect(self, code):
        task = getattr(self, "task", None)
        if task is not None:
            task.cancel()
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def dispatch(self, message):
        # The data-plane group may carry message types meant for node consumers only.
        if get_handler_name(message) and not hasattr(self, get_handler_name(message)):
            return
        await super().dispatch(message)

    async def receive(self, text_data=None, bytes_data=None):
        if text_data == "refresh":
            self.last_sent = None
            self.wake.set()

    # group hints (sent on commit; at most once)
    async def config_changed(self, event):
        self.wake.set()

    async def health_changed(self, event):
        self.wake.set()

    async def traffic_updated(self, event):
        self.traffic_due = True
        self.wake.set()

    async def loop(self):
        interval = max(0.2, float(getattr(settings, "SWITCHYARD_LIVE_POLL_SECONDS", 1.0)))
        loop = asyncio.get_running_loop()
        traffic, traffic_at = None, 0.0
        self.traffic_due = True
        while True:
            with_traffic = self.traffic_due or loop.time() - traffic_at >= TRAFFIC_EVERY
            try:
                state = await database_sync_to_async(live_state)(self.user_id, with_traffic)
            except Exception:
                log.exception("live: reading state failed")
                state = None
            if state is None:
                await self.close(code=4403)  # user gone or deactivated
                return
            if with_traffic:
                traffic, traffic_at, self.traffic_due = state["traffic"], loop.time(), False
            else:
                state["traffic"] = traffic
                if traffic:
                    state["values"].update(traffic.get("values") or {})
            text = json.dumps(state, sort_keys=True, default=str)
            if text != self.last_sent:
                self.last_sent = text
                await self.send(text_data=text)
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass


def live_state(user_id, with_traffic: bool = True) -> dict | None:
    """What the pages show live, scoped for this user; None when the user may not see it."""
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return None
    p = Principal.for_user(user)
    current = ConfigVersion.objects.order_by("-number").values("number", "sha256").first()
    nodes = []
    for n in Node.objects.filter(revoked=False).values(
            "id", "name", "connected", "applied_version", "applied_hash", "rejected_version", "last_error",
            "last_error_at"):
        node = {
            "id": n["id"], "name": n["name"], "connected": n["connected"], "applied_version": n["applied_version"],
            "current": bool(current and n["applied_hash"] == current["sha256"]),
            "rejected_version": n["rejected_version"],
            "last_error_at": n["last_error_at"].isoformat() if n["last_error_at"] else None,
        }
        if p.staff:
            node["last_error"] = (n["last_error"] or [])[:3]
        nodes.append(node)
    targets = p.scope(Target.objects.all(), "pool__tenant")
    unhealthy = sorted(targets.filter(healthy=False).values_list("id", flat=True)[:500])
    health_counts = health_summary.counts(targets)  # a change (first check, passive evidence) refreshes pages
    traffic = telemetry.live_counters(p) if with_traffic else None
    values = {
        "current_version": f"v{current['number']}" if current else "none",
        "nodes_connected": sum(1 for n in nodes if n["connected"]),
        "nodes_current": sum(1 for n in nodes if n["current"]),
        **{f"{state}_count": health_counts[state] for state in health_summary.STATES},
    }
    if traffic:
        values.update(traffic.get("values") or {})
    return {
        "type": "state",
        "values": values,
        "nodes": nodes,
        "health": {"changed": targets.aggregate(m=Max("health_changed"))["m"], "unhealthy": unhealthy,
                   "counts": health_counts},
        "config": {"version": current["number"] if current else None},
        "traffic": traffic,
    }
