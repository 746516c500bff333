"""Live tail of the nodes' access logs, as an async stream of events.

``stream(filter, node_id=None, seconds=300, limit=0)`` is the service (the API's SSE
endpoint and any dashboard view use it): it opens a tail session (a fresh id), joins
the session's channel-layer group, tells the nodes ``tail.start`` with the filter and
an expiry 60 s ahead, renews that every ``RENEW_SECONDS`` (which also reaches nodes
that connect meanwhile), and yields events until ``seconds`` pass, ``limit`` lines
were sent, or the consumer of the stream goes away — then it sends ``tail.stop``.
A node that misses the stop drops the session at its expiry by itself.

Events (name, data): ``("hello", {"session", "filter", "nodes"})``, ``("line", {access
log object})``, ``("dropped", {"node", "dropped", "total"})``, ``("end", {"reason",
"lines", "dropped"})``. Lines are checked against the filter's route ids once more here,
so a tenant never sees another tenant's line even from a misbehaving node.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, AsyncIterator

from channels.layers import get_channel_layer

from controlplane.diagnostics import relay
from dataplane import schema

RENEW_SECONDS = 20.0
EXPIRES_AHEAD = 60.0
KEEPALIVE_SECONDS = 15.0
MAX_SECONDS = 3600
QUEUE_SIZE = 200   # batches waiting for a slow viewer; more are dropped


async def stream(flt: dict, node_id: int | None = None, seconds: float = 300.0,
                 limit: int = 0) -> AsyncIterator[tuple[str, dict]]:
    layer = get_channel_layer()
    sid = uuid.uuid4().hex
    box = await relay.inbox()
    queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_SIZE)
    box.waiters[sid] = queue
    group = relay.tail_group(sid)
    await layer.group_add(group, box.channel)
    allowed = set(flt["routes"]) if "routes" in flt else None
    start_msg = {"type": schema.MSG_TAIL_START, "id": sid, "filter": flt}
    sent = dropped = 0
    reason = "time limit reached"
    deadline = time.monotonic() + max(1.0, min(float(seconds), MAX_SECONDS))
    try:
        await relay.node_command(node_id, {**start_msg, "expires": time.time() + EXPIRES_AHEAD})
        renew_at = time.monotonic() + RENEW_SECONDS
        yield "hello", {"session": sid, "filter": flt, "node": node_id,
                        "until": time.time() + (deadline - time.monotonic())}
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= renew_at:
                await relay.node_command(node_id, {**start_msg,
                                                   "expires": time.time() + EXPIRES_AHEAD})
                renew_at = now + RENEW_SECONDS
            wait = min(deadline, renew_at, now + KEEPALIVE_SECONDS) - now
            try:
                event = await asyncio.wait_for(queue.get(), max(wait, 0.01))
            except asyncio.TimeoutError:
                yield "keepalive", {}
                continue
            if not isinstance(event, dict) or event.get("type") != relay.TAIL_LINES:
                continue
            if event.get("dropped"):
                dropped += int(event["dropped"])
                yield "dropped", {"node": event.get("node"), "dropped": int(event["dropped"]),
                                  "total": dropped}
            for line in event.get("lines") or ():
                if allowed is not None and line.get("route_id") not in allowed:
                    continue
                yield "line", line
                sent += 1
                if limit and sent >= limit:
                    reason = "line limit reached"
                    break
            if limit and sent >= limit:
                break
        yield "end", {"reason": reason, "lines": sent, "dropped": dropped}
    finally:
        try:
            await relay.node_command(node_id, {"type": schema.MSG_TAIL_STOP, "id": sid})
        finally:
            box.waiters.pop(sid, None)
            await layer.group_discard(group, box.channel)


def sse(event: str, data: dict) -> bytes:
    if event == "keepalive":
        return b": keepalive\n\n"
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def jsonl(event: str, data: Any) -> bytes:
    if event == "keepalive":
        return b"\n"
    return (json.dumps({"event": event, "data": data}, default=str) + "\n").encode()
