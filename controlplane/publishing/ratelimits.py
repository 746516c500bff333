"""Rate-limit shares, control-plane side (the node side and the design: dataplane/ratelimit.py).

Every node reports its demand per limit every ``schema.RATELIMIT_SECONDS`` on its
sync connection. The consumer holding that connection puts the report in the shared
store and reads every node's latest report back in one round trip, then answers the
node with its shares (``dataplane.ratelimit.compute_shares``). The store:

- production (``REDIS_URL``): one Redis hash, ``switchyard:ratelimit:reports``, field =
  node id, value = ``{"t": epoch, "limits": ...}``; reports older than ``FRESH_SECONDS``
  are ignored (and deleted), so a node that stops reporting stops counting. Every
  control-plane process sees every node, whichever process holds its connection.
- embedded mode: the same in the one Daphne process's memory.

When Redis cannot be reached (each call waits at most ``REDIS_TIMEOUT``; after a
failure it is not asked again for ``RETRY_SECONDS``) the node is told ``fallback`` with
the time the store became unreachable and the number of nodes last seen, and falls back
to ``1 / nodes`` of each limit. The consumer records the switch both ways as a
``NodeEvent`` (``rl_local`` / ``rl_shared``); ``fallback_since`` reads it for the node
page, the route page and the API.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime, timezone as dt_timezone

from channels.db import database_sync_to_async
from django.conf import settings

from dataplane import ratelimit, schema

log = logging.getLogger("switchyard.ratelimit")

REDIS_KEY = "switchyard:ratelimit:reports"
FRESH_SECONDS = 1.5
REDIS_TIMEOUT = 0.5
RETRY_SECONDS = 1.0
EVENT_LOCAL, EVENT_SHARED = "rl_local", "rl_shared"


class StoreUnreachable(Exception):
    pass


class MemoryStore:
    """Embedded mode: one process holds every node's connection."""

    def __init__(self) -> None:
        self.reports: dict[str, tuple[float, dict]] = {}

    async def exchange(self, node: str, limits: dict, now: float) -> dict[str, dict]:
        self.reports[node] = (now, limits)
        fresh = {}
        for other, (t, rep) in list(self.reports.items()):
            if now - t <= FRESH_SECONDS:
                fresh[other] = rep
            else:
                del self.reports[other]
        return fresh


class RedisStore:
    """Production: every control-plane process reads and writes the same hash."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = None
        self.down_until = 0.0

    def _client(self):
        if self.client is None:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            self.client = aioredis.Redis.from_url(
                self.url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT,
                retry=Retry(NoBackoff(), 0), health_check_interval=0)
        return self.client

    async def exchange(self, node: str, limits: dict, now: float) -> dict[str, dict]:
        if time.monotonic() < self.down_until:
            raise StoreUnreachable("shared store unreachable (retrying shortly)")
        blob = json.dumps({"t": now, "limits": {k: [d, keys] for k, (d, keys) in limits.items()}},
                          separators=(",", ":"))
        try:
            pipe = self._client().pipeline(transaction=False)
            pipe.hset(REDIS_KEY, node, blob)
            pipe.expire(REDIS_KEY, 60)
            pipe.hgetall(REDIS_KEY)
            _, _, raw = await pipe.execute()
        except Exception as exc:  # any failure of the store is the same outage
            self.down_until = time.monotonic() + RETRY_SECONDS
            client, self.client = self.client, None
            if client is not None:
                try:
                    await client.aclose()
                except Exception:  # noqa: BLE001 - closing a broken client
                    pass
            raise StoreUnreachable(f"{type(exc).__name__}: {exc}"[:300]) from exc
        fresh: dict[str, dict] = {}
        stale = []
        for field, value in raw.items():
            other = field.decode() if isinstance(field, bytes) else str(field)
            try:
                data = json.loads(value)
                t = float(data["t"])
                rep = {k: (float(d), dict(keys)) for k, (d, keys) in data["limits"].items()}
            except (ValueError, KeyError, TypeError):
                stale.append(other)
                continue
            if now - t <= FRESH_SECONDS:
                fresh[other] = rep
            elif now - t > 10 * FRESH_SECONDS:
                stale.append(other)
        if stale:
            try:
                await self._client().hdel(REDIS_KEY, *stale)
            except Exception:  # noqa: BLE001 - deleting stale reports is housekeeping
                pass
        fresh[node] = limits
        return fresh


_store = None


def store():
    global _store
    if _store is None:
        url = getattr(settings, "REDIS_URL", "") or ""
        _store = RedisStore(url) if url else MemoryStore()
    return _store


class NodeShares:
    """One node connection's side of the exchange (held by its consumer)."""

    def __init__(self, node_id: int) -> None:
        self.node = str(node_id)
        self.nodes = 1
        self.down_since: float | None = None  # epoch: the store unreachable since
        self.error = ""

    async def answer(self, msg: dict, connected_nodes) -> dict:
        """The shares message for a report (raises ``schema.RateLimitMessageInvalid``).
        ``connected_nodes``: an async callable giving the number of connected nodes, asked
        only when the store is unreachable and no count was seen yet."""
        limits = schema.parse_ratelimit_report(msg)
        now = time.time()
        try:
            reports = await store().exchange(self.node, limits, now)
        except StoreUnreachable as exc:
            if self.down_since is None:
                self.down_since = now
                log.warning("rate limits: shared store unreachable (%s); node %s falls back", exc, self.node)
            self.error = str(exc)
            if self.nodes <= 1:
                self.nodes = max(1, await connected_nodes())
            return {"type": schema.MSG_RATELIMIT_SHARES, "nodes": self.nodes, "fallback": True,
                    "since": round(self.down_since, 3), "limits": {}}
        if self.down_since is not None:
            log.info("rate limits: shared store reachable again; node %s shares again", self.node)
        self.down_since = None
        self.error = ""
        self.nodes = max(1, len(reports))
        return {"type": schema.MSG_RATELIMIT_SHARES, "nodes": self.nodes, "fallback": False,
                "since": None, "limits": ratelimit.compute_shares(self.node, reports)}


# ---------------------------------------------------------------- ORM helpers (sync)

def record_state(node_id: int, fallback: bool, since: float | None, error: str) -> None:
    """Record a switch to or from the fallback, once per switch (the latest rl event)."""
    from controlplane.publishing.models import NodeEvent
    kind = EVENT_LOCAL if fallback else EVENT_SHARED
    last = (NodeEvent.objects.filter(node_id=node_id, kind__in=(EVENT_LOCAL, EVENT_SHARED))
            .order_by("-id").values_list("kind", flat=True).first())
    if last == kind or (last is None and not fallback):
        return
    errors = [{"path": "rate_limits", "message": f"shared store unreachable: {error}"[:1000]}] if fallback else []
    event = NodeEvent.objects.create(node_id=node_id, kind=kind, errors=errors)
    if fallback and since is not None:  # the store was unreachable from ``since`` on
        NodeEvent.objects.filter(pk=event.pk).update(
            created=datetime.fromtimestamp(since, tz=dt_timezone.utc))


def connected_nodes() -> int:
    from controlplane.publishing.models import Node
    return Node.objects.filter(connected=True, revoked=False).count()


def fallback_since(node_ids=None) -> dict[int, datetime]:
    """{node id: since when it runs on fallback shares} for connected nodes whose latest
    rate-limit event is a switch to the fallback."""
    from controlplane.publishing.models import Node, NodeEvent
    nodes = Node.objects.filter(connected=True, revoked=False)
    if node_ids is not None:
        nodes = nodes.filter(pk__in=list(node_ids))
    out = {}
    for node_id in nodes.values_list("pk", flat=True):
        last = (NodeEvent.objects.filter(node_id=node_id, kind__in=(EVENT_LOCAL, EVENT_SHARED))
                .order_by("-id").values_list("kind", "created").first())
        if last is not None and last[0] == EVENT_LOCAL:
            out[node_id] = last[1]
    return out


class RateLimitMixin:
    """The sync consumer's part: answer each demand report with shares. The exchange runs
    in a background task, one at a time per connection, newest report first (a slow or
    unreachable store never holds up the connection's other messages)."""

    rl_shares: NodeShares | None = None
    rl_task = None
    rl_pending: dict | None = None
    rl_fallback: bool | None = None  # the state last recorded for this connection

    async def on_ratelimit_report(self, msg):
        if not getattr(self, "greeted", False):
            return
        if self.rl_shares is None:
            self.rl_shares = NodeShares(self.node_id)
        self.rl_pending = msg  # a newer report replaces one still waiting
        if self.rl_task is None or self.rl_task.done():
            self.rl_task = asyncio.create_task(self._rl_exchange())

    async def _rl_exchange(self):
        while self.rl_pending is not None:
            msg, self.rl_pending = self.rl_pending, None
            shares = self.rl_shares
            try:
                answer = await shares.answer(msg, database_sync_to_async(connected_nodes))
            except schema.RateLimitMessageInvalid as exc:
                log.warning("rate limits: node %s sent an invalid report; ignored: %s", self.node_id, exc)
                continue
            except Exception:  # a bug here must never cost the node its sync connection
                log.exception("rate limits: answering node %s failed", self.node_id)
                continue
            await self.send(text_data=json.dumps(answer, separators=(",", ":")))
            fallback = answer["fallback"]
            if fallback != self.rl_fallback:
                self.rl_fallback = fallback
                try:
                    await database_sync_to_async(record_state)(
                        self.node_id, fallback, shares.down_since, shares.error)
                except Exception:
                    log.exception("rate limits: recording node %s's state failed", self.node_id)

    def ratelimit_stop(self):
        if self.rl_task is not None:
            self.rl_task.cancel()
