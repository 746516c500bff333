"""Is a node running, and does it run the current config? And which node runs a command.

Node round trips are async (``relay``); callers in sync code (DRF views under Daphne
run in a worker thread) use ``async_to_sync``, which hops back to the event loop that
owns the channel layer.
"""
from __future__ import annotations

from typing import Any

from django.utils import timezone

from controlplane.diagnostics import relay
from controlplane.diagnostics.models import NodeRuntime
from controlplane.publishing.models import ConfigVersion, Node, NodeEvent
from controlplane.tenancy.access import Principal

from .access import Conflict, node_or_404
from .links import iso, url

EVENTS_SHOWN = 10


def pick_node(p: Principal, ref: Any = None) -> Node:
    """The node to run a command on: the one named, else a connected one."""
    if ref not in (None, ""):
        node = node_or_404(p, ref)
        if not node.connected:
            raise Conflict(f"node {node.name} is not connected; it cannot run diagnostics now")
        return node
    node = Node.objects.filter(revoked=False, connected=True).order_by("-last_seen", "name").first()
    if node is None:
        raise Conflict("no data-plane node is connected", status=503)
    return node


async def run_on_node(node: Node, msg: dict, timeout: float) -> dict:
    try:
        reply = await relay.node_request(node.id, msg, timeout)
    except relay.NodeTimeout:
        raise Conflict(f"node {node.name} did not answer within {timeout:g} s", status=504) from None
    result = reply.get("result")
    return result if isinstance(result, dict) else {"ok": False, "error": "no result"}


def _latest() -> ConfigVersion | None:
    return ConfigVersion.objects.order_by("-number").only("number", "sha256").first()


def _last_nack(node: Node, latest: ConfigVersion | None) -> dict | None:
    if node.rejected_version is None and not node.last_error:
        return None
    return {"version": node.rejected_version, "hash": node.rejected_hash or None,
            "at": iso(node.last_error_at), "errors": node.last_error or [],
            # a NACK older than the last ACK of a newer version is history
            "current": bool(latest and node.rejected_version == latest.number)}


def _state(node: Node, latest: ConfigVersion | None, in_sync: bool, nack: dict | None) -> str:
    if not node.connected:
        return "disconnected"
    if latest is None:
        return "no configuration published yet"
    if in_sync:
        return "in sync"
    if nack and nack["current"]:
        return "rejected the current version"
    return "applying or behind"


def _seconds_since(since, now, running: bool) -> float | None:
    return round((now - since).total_seconds(), 1) if since and running else None


def node_status(node: Node, latest: ConfigVersion | None = ..., now=None) -> dict:
    now = now or timezone.now()
    if latest is ...:
        latest = _latest()
    runtime = NodeRuntime.objects.filter(node=node).first()
    started = runtime.started if runtime else None
    in_sync = bool(latest and node.applied_hash == latest.sha256)
    nack = _last_nack(node, latest)
    events = [{"kind": e.kind, "version": e.version, "hash": e.sha256, "at": iso(e.created),
               "apply_ms": e.apply_ms, "errors": e.errors}
              for e in NodeEvent.objects.filter(node=node).order_by("-id")[:EVENTS_SHOWN]]
    return {
        "id": node.id, "name": node.name, "connected": node.connected, "revoked": node.revoked,
        "state": _state(node, latest, in_sync, nack),
        "software_version": node.software_version or None, "workers": node.workers,
        "started": iso(started),
        "uptime_seconds": _seconds_since(started, now, node.connected),
        "connected_since": iso(node.connected_since),
        "connection_uptime_seconds": _seconds_since(node.connected_since, now, node.connected),
        "last_seen": iso(node.last_seen),
        "applied": {"version": node.applied_version, "hash": node.applied_hash or None},
        "current": {"version": latest.number if latest else None,
                    "hash": latest.sha256 if latest else None},
        "in_sync": in_sync,
        "last_ack": {"at": iso(node.last_ack), "version": node.applied_version,
                     "apply_ms": node.last_apply_ms} if node.last_ack else None,
        "last_nack": nack,
        "events": events,
        "links": {"self": url("node", node.id), "errors": url("node-errors", node.id),
                  "tail": url("tail", node=node.id)},
    }


def nodes_status(p: Principal) -> list[dict]:
    if not p.staff:
        # a tenant may pick a node for probes and tails: names and connection only
        return [{"id": n.id, "name": n.name, "connected": n.connected}
                for n in Node.objects.filter(revoked=False).order_by("name")]
    latest = _latest()
    return [node_status(n, latest) for n in Node.objects.order_by("name")]
