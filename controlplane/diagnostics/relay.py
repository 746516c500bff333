"""Diagnostic commands between the API and the nodes, over the channel layer.

The API (any control-plane process) never talks to a node's WebSocket directly:

- every connected ``DataPlaneConsumer`` joins ``node_group(node_id)`` after hello (and
  ``DATAPLANE_GROUP`` already), and handles ``{"type": "diag.command",
  "message": {...}, "reply_to": channel}`` by sending ``message`` to its node;
- answers (``probe.result``, ``synthetic.result``) go back to the ``reply_to`` channel
  the command named (``{"type": "diag.reply", "message": {...}}``), so the API process
  that asked — and only it — gets the answer;
- ``tail.lines`` go to ``tail_group(session id)``, which every viewer of that tail
  session joins (``{"type": "tail.lines", "node": name, "lines": [...], "dropped": n}``);
  the channel layer drops messages for a full viewer channel: a slow viewer loses lines,
  it never slows anything down;
- ``capture.record`` messages are stored (``store.store_capture``).

``DiagnosticsMixin`` is the consumer side; ``node_request`` / ``node_command`` /
``broadcast_command`` the API side.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from controlplane.diagnostics.store import record_runtime, store_capture
from controlplane.publishing.hints import DATAPLANE_GROUP
from dataplane import schema

log = logging.getLogger("switchyard.diagnostics")

DIAG_COMMAND = "diag.command"   # handled by DiagnosticsMixin.diag_command
DIAG_REPLY = "diag.reply"
TAIL_LINES = "tail.lines"
MAX_TAIL_LINES = 1000           # per message from a node
MAX_PENDING_REPLIES = 256
REPLY_TTL = 180.0


class NodeTimeout(Exception):
    """The node did not answer in time."""


def node_group(node_id: int) -> str:
    return f"switchyard.node.{int(node_id)}"


def tail_group(session_id: str) -> str:
    return f"switchyard.tail.{session_id}"


# ---------------------------------------------------------------- consumer side

class DiagnosticsMixin:
    """Mixed into ``publishing.consumers.DataPlaneConsumer``."""

    async def diag_join(self, hello: dict) -> None:
        self.diag_replies: dict[str, tuple[str, float]] = {}
        if not getattr(self, "diag_in_group", False):
            await self.channel_layer.group_add(node_group(self.node_id), self.channel_name)
            self.diag_in_group = True
        started = hello.get("started")
        if isinstance(started, (int, float)) and not isinstance(started, bool) and 0 < started < 1e11:
            try:
                await database_sync_to_async(record_runtime)(self.node_id, float(started))
            except Exception:  # diagnostics never cost the sync connection
                log.exception("diagnostics: recording the runtime of node %s failed", self.node_name)

    async def diag_leave(self) -> None:
        if getattr(self, "diag_in_group", False):
            await self.channel_layer.group_discard(node_group(self.node_id), self.channel_name)
            self.diag_in_group = False

    async def diag_command(self, event: dict) -> None:
        """A command from the API for this node (group message)."""
        if not getattr(self, "greeted", False):
            return
        message = event.get("message")
        if not isinstance(message, dict) or message.get("type") not in schema.DIAGNOSTIC_COMMANDS:
            return
        reply_to = event.get("reply_to")
        replies = getattr(self, "diag_replies", None)
        if replies is None:
            replies = self.diag_replies = {}
        if reply_to and message.get("id"):
            now = time.monotonic()
            for key in [k for k, (_, t) in replies.items() if t < now]:
                del replies[key]
            while len(replies) >= MAX_PENDING_REPLIES:
                replies.pop(next(iter(replies)))
            replies[str(message["id"])] = (reply_to, now + REPLY_TTL)
        log.debug("diagnostics: %s %s to node %s", message.get("type"), message.get("id"),
                  self.node_name)
        await self.send(text_data=json.dumps(message))

    async def on_diagnostic(self, msg: dict) -> None:
        """A diagnostics message from the node (untrusted input: bounded, validated)."""
        if not getattr(self, "greeted", False):
            return
        kind = msg.get("type")
        sid = msg.get("id")
        if not isinstance(sid, str) or not sid or len(sid) > 64:
            return
        try:
            if kind == schema.MSG_TAIL_LINES:
                lines = msg.get("lines")
                lines = [ln for ln in lines[:MAX_TAIL_LINES] if isinstance(ln, dict)] \
                    if isinstance(lines, list) else []
                dropped = msg.get("dropped")
                dropped = dropped if isinstance(dropped, int) and not isinstance(dropped, bool) \
                    and dropped >= 0 else 0
                if lines or dropped:
                    await self.channel_layer.group_send(tail_group(_safe(sid)), {
                        "type": TAIL_LINES, "key": _safe(sid), "node": self.node_name,
                        "node_id": self.node_id, "lines": lines, "dropped": dropped})
            elif kind == schema.MSG_CAPTURE_RECORD:
                record = msg.get("record")
                if isinstance(record, dict) and len(json.dumps(record)) <= 512 * 1024:
                    await database_sync_to_async(store_capture)(self.node_id, sid, record)
            elif kind in (schema.MSG_PROBE_RESULT, schema.MSG_SYNTHETIC_RESULT):
                entry = getattr(self, "diag_replies", {}).pop(sid, None)
                log.debug("diagnostics: %s %s from node %s (%s)", kind, sid, self.node_name,
                         "relayed" if entry else "nobody waits")
                if entry is not None:
                    await self.channel_layer.send(entry[0], {"type": DIAG_REPLY, "key": sid,
                                                             "message": msg})
        except Exception:  # never end the sync connection over diagnostics
            log.exception("diagnostics: handling %s from node %s failed", kind, self.node_name)


def _safe(sid: str) -> str:
    return "".join(c for c in sid if c.isalnum() or c in "-_.")[:64] or "x"


# ---------------------------------------------------------------- API side
#
# One never-cancelled receive loop per process (and event loop) reads a process-local
# "inbox" channel and hands each event to whoever waits for its key (a reply id or a
# tail session id). Waiters time out on their own future or queue, never by cancelling
# ``layer.receive``: with channels_redis one receive loop serves every process-local
# channel of the process (the sync consumers' too), and cancelling it mid-read is not
# something to do on every timeout.

class _Inbox:
    def __init__(self, layer, loop):
        self.layer, self.loop = layer, loop
        self.channel: str | None = None
        self.waiters: dict[str, object] = {}
        self.task: asyncio.Task | None = None
        self.lock = asyncio.Lock()

    async def start(self) -> None:
        async with self.lock:
            if self.channel is None:
                # the default prefix: channels_redis serves all process-local channels of
                # a process from one list per prefix, read by whichever receive holds its lock
                self.channel = await self.layer.new_channel()
                self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            try:
                event = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # e.g. the broker restarting: keep serving
                log.exception("diagnostics: receiving from the channel layer failed")
                await asyncio.sleep(0.5)
                continue
            if not isinstance(event, dict):
                continue
            target = self.waiters.get(str(event.get("key")))
            if isinstance(target, asyncio.Future):
                if not target.done():
                    target.set_result(event)
            elif isinstance(target, asyncio.Queue):
                try:
                    target.put_nowait(event)
                except asyncio.QueueFull:  # a slow viewer: drop, never block the loop
                    pass


_inboxes: list[_Inbox] = []


async def inbox() -> _Inbox:
    layer = get_channel_layer()
    loop = asyncio.get_running_loop()
    for box in list(_inboxes):
        if box.layer is layer and box.loop is loop:
            break
        if box.loop is not loop or box.layer is not layer:
            _inboxes.remove(box)  # an old loop (tests) or a replaced layer
    else:
        box = _Inbox(layer, loop)
        _inboxes.append(box)
    await box.start()
    return box


async def node_command(node_id: int | None, message: dict) -> None:
    """Fire-and-forget: to one node, or to every connected node (``node_id`` None)."""
    layer = get_channel_layer()
    group = node_group(node_id) if node_id is not None else DATAPLANE_GROUP
    await layer.group_send(group, {"type": DIAG_COMMAND, "message": message})


async def node_request(node_id: int, message: dict, timeout: float) -> dict:
    """Send a command to one node and wait for its answer (same id). Raises NodeTimeout."""
    layer = get_channel_layer()
    box = await inbox()
    key = str(message.get("id"))
    fut = asyncio.get_running_loop().create_future()
    box.waiters[key] = fut
    try:
        await layer.group_send(node_group(node_id), {"type": DIAG_COMMAND, "message": message,
                                                     "reply_to": box.channel})
        try:
            event = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise NodeTimeout(f"no answer within {timeout:g} s") from None
    finally:
        if box.waiters.get(key) is fut:
            del box.waiters[key]
    return event.get("message") or {}
