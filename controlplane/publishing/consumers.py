"""The data-plane sync WebSocket, control-plane side.

A node connects to ``/ws/dataplane/`` with ``Authorization: Bearer <node token>``,
says hello with the version and hash it runs, and gets the current snapshot pushed
when its hash differs. Every push carries a nonce; the node answers with an ACK or a
NACK, both recorded on the ``Node``. A NACKed version is never pushed to that node
again (the record is in the database, so this holds across reconnects and across
control-plane processes); the objects a NACK names are quarantined and the rest is
published at once (``quarantine``).

Group messages (``notify.CONFIG_CHANGED``) are only hints: the consumer always reads
the truth from the database, coalesces hints for ``SWITCHYARD_PUSH_COALESCE_SECONDS``,
and every heartbeat is answered from the database too, so a lost hint costs at most
one heartbeat. The in-memory channel layer (embedded mode) cannot carry a hint
from another process (the Celery worker, ``manage.py``, a script calling the
service layer) by itself, so there every hint is also sent as one datagram to a
Unix socket in the abstract namespace named after the database
(``controlplane.publishing.localhints``); the first consumer that connects in the
Daphne process binds it, validates each datagram and re-sends it with
``group_send`` on the local layer. That bridge is at-most-once too (no receiver, a
full buffer, or a second Daphne on the same database that could not bind: the hint
is gone), so in embedded mode each consumer also polls the newest version number
and the health generation every ``SWITCHYARD_POLL_SECONDS`` (0.5 s) as the fallback.

The channel layer is optional for a consumer (``layerlink.LayerTolerantMixin``): while it is
down or frozen the consumer keeps answering its node from the database; every layer
call waits at most ``LAYER_TIMEOUT``, group messages are read by a background task
that survives the layer's errors, and the groups are joined again, with backoff,
once the layer is back.

The consumer only translates messages; all ORM work is in the small functions at
the bottom, run through ``database_sync_to_async``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from controlplane.alerts.hooks import node_rejected_config
from controlplane.diagnostics.relay import DiagnosticsMixin
from controlplane.health.status import health_generation, health_message, health_snapshot
from controlplane.publishing import localhints, notify, sni
from controlplane.publishing.compiler import materialize
from controlplane.publishing.layerlink import LayerTolerantMixin
from controlplane.publishing.quarantine import quarantine_rejected
from controlplane.publishing.ratelimits import RateLimitMixin
from controlplane.publishing.models import ConfigVersion, Node, NodeEvent
from controlplane.telemetry.store import store_stats_async
from controlplane.tenancy.models import hash_token
from dataplane import schema

log = logging.getLogger("switchyard.sync")

# Bounds on what a node may make us store from one NACK.
MAX_NACK_ERRORS = 50
MAX_ERROR_PATH = 300
MAX_ERROR_MESSAGE = 1000
# A push not answered on this connection within this time may be sent again.
PUSH_ANSWER_TIMEOUT = 120.0
@dataclass(frozen=True)
class PushPlan:
    version: int
    digest: str
    snapshot: dict  # materialized: private keys included


class DataPlaneConsumer(LayerTolerantMixin, DiagnosticsMixin, RateLimitMixin, AsyncWebsocketConsumer):
    """The sync protocol below; diagnostics (tail, capture, probe) come from
    ``controlplane.diagnostics.relay.DiagnosticsMixin``."""

    # ------------------------------------------------------------ lifecycle

    async def connect(self):
        self.node_id: int | None = None
        self.node_name = ""
        self.greeted = False
        self.in_group = False
        self.connected_since = None
        self.node_version: int | None = None
        self.node_hash: str | None = None
        self.nonces: dict[str, tuple[int, str]] = {}   # pushes sent on this connection
        self.inflight: tuple[int, float] | None = None  # (version, monotonic sent-at)
        self.push_lock = asyncio.Lock()
        self.pending_check: asyncio.Task | None = None
        self.poll_task: asyncio.Task | None = None
        self.traffic_hint: asyncio.Task | None = None
        self.known_latest: int | None = None
        self.health_generation: int | None = None  # last health state sent to the node

        token = bearer_token(self.scope)
        node = await database_sync_to_async(authenticate_node)(token) if token else None
        if node is None:
            log.warning("sync: refused a data-plane connection (%s token)",
                        "invalid" if token else "no")
            await self.close()  # before accept: the handshake gets a 403
            return
        self.node_id, self.node_name = node
        await self.accept()
        localhints.ensure_receiver(self.channel_layer.layer)  # embedded mode: hints from other processes

    async def disconnect(self, code):
        for task in (self.pending_check, self.poll_task, self.traffic_hint):
            if task is not None:
                task.cancel()
        if getattr(self, "in_group", False):
            await self.channel_layer.group_discard(notify.DATAPLANE_GROUP, self.channel_name)
            self.in_group = False
        await self.diag_leave()
        self.ratelimit_stop()
        if getattr(self, "greeted", False):
            await database_sync_to_async(mark_disconnected)(self.node_id, self.connected_since)
            log.info("sync: node %s disconnected (code %s)", self.node_name, code)

    # ------------------------------------------------------------ node -> control plane

    async def receive(self, text_data=None, bytes_data=None):
        if self.node_id is None:
            return
        if text_data is None:
            log.warning("sync: node %s sent a binary frame; ignored", self.node_name)
            return
        try:
            msg = json.loads(text_data)
        except ValueError:
            log.warning("sync: node %s sent invalid JSON; ignored", self.node_name)
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        handler = {
            schema.MSG_HELLO: self.on_hello,
            schema.MSG_HEARTBEAT: self.on_heartbeat,
            schema.MSG_ACK: self.on_ack,
            schema.MSG_NACK: self.on_nack,
            schema.MSG_STATS: self.on_stats,
            schema.MSG_RATELIMIT_REPORT: self.on_ratelimit_report,  # publishing.ratelimits
            schema.MSG_UNKNOWN_SNI: self.on_unknown_sni,
        }.get(kind)
        if handler is None and kind in schema.DIAGNOSTIC_REPLIES:
            handler = self.on_diagnostic
        if handler is None:
            log.debug("sync: node %s sent unknown message type %r", self.node_name, kind)
            return
        await handler(msg)

    async def on_hello(self, msg):
        self.node_version, self.node_hash = _opt_int(msg.get("version")), _opt_str(msg.get("hash"))
        software = str(msg.get("software") or "")[:50]
        workers = _opt_int(msg.get("workers")) or 1
        ok, self.connected_since = await database_sync_to_async(mark_connected)(
            self.node_id, software, max(1, min(workers, 1024)))
        if not ok:  # revoked meanwhile
            await self.close(code=4003)
            return
        self.greeted = True
        if not self.in_group:
            await self.channel_layer.group_add(notify.DATAPLANE_GROUP, self.channel_name)
            self.in_group = True
        await self.diag_join(msg)
        log.info("sync: node %s hello (v%s %s, %s)", self.node_name, self.node_version,
                 (self.node_hash or "-")[:12], software or "unknown software")
        await self.check_and_push()
        await self.sync_health()
        poll = float(getattr(settings, "SWITCHYARD_POLL_SECONDS", 0) or 0)
        if poll > 0 and self.poll_task is None:
            self.poll_task = asyncio.create_task(self.poll_loop(poll))

    async def on_heartbeat(self, msg):
        self.node_version, self.node_hash = _opt_int(msg.get("version")), _opt_str(msg.get("hash"))
        if not await database_sync_to_async(touch_node)(self.node_id):
            await self.close(code=4003)
            return
        if self.greeted:
            await self.check_and_push()
            await self.sync_health()

    async def on_ack(self, msg):
        version, digest = _opt_int(msg.get("version")), _opt_str(msg.get("hash"))
        if version is None or not digest:
            log.warning("sync: node %s sent a malformed ACK", self.node_name)
            return
        nonce = str(msg.get("nonce") or "")[:64]
        apply_ms = msg.get("apply_ms")
        apply_ms = float(apply_ms) if isinstance(apply_ms, (int, float)) and not isinstance(apply_ms, bool) else None
        async with self.push_lock:  # no push decision sees a half-recorded answer
            self.node_version, self.node_hash = version, digest
            await database_sync_to_async(record_ack)(self.node_id, nonce, version, digest, apply_ms)
            self._answered(nonce, version)
        log.info("sync: node %s ACK v%s in %s ms", self.node_name, version, apply_ms)

    async def on_nack(self, msg):
        version, digest = _opt_int(msg.get("version")), _opt_str(msg.get("hash")) or ""
        if version is None:
            log.warning("sync: node %s sent a malformed NACK", self.node_name)
            return
        nonce = str(msg.get("nonce") or "")[:64]
        errors = bound_errors(msg.get("errors"))
        async with self.push_lock:  # the rejection is in the database before any new decision
            self.node_version = _opt_int(msg.get("running_version"))
            self.node_hash = _opt_str(msg.get("running_hash"))
            await database_sync_to_async(record_nack)(self.node_id, nonce, version, digest, errors)
            self._answered(nonce, version)
        log.warning("sync: node %s NACK v%s: %s", self.node_name, version,
                    "; ".join(f"{e['path']}: {e['message']}" for e in errors[:3]))

    async def on_stats(self, msg):
        """A traffic report: validated here (untrusted input), stored by telemetry."""
        if not self.greeted:
            return
        try:
            report = schema.parse_stats(msg)
        except schema.StatsInvalid as exc:
            log.warning("sync: node %s sent an invalid stats report; ignored: %s", self.node_name, exc)
            return
        try:
            stored = await store_stats_async(self.node_id, report)
        except Exception:  # telemetry must never cost the node its sync connection
            log.exception("sync: storing traffic of node %s failed", self.node_name)
            return
        if not stored or not self.channel_layer.in_groups:  # no hint into a known outage
            return
        if self.traffic_hint is None or self.traffic_hint.done():
            # in the background: a frozen layer must not hold up this node's heartbeats
            self.traffic_hint = asyncio.create_task(notify.traffic_updated())

    async def on_unknown_sni(self, msg):
        """On-demand TLS: names without a certificate (``publishing.sni``); at most one
        message per ``schema.UNKNOWN_SNI_SECONDS`` per connection, the rest dropped."""
        now = time.monotonic()
        if not self.greeted or now - getattr(self, "unknown_sni_at", float("-inf")) < schema.UNKNOWN_SNI_SECONDS / 2:
            return
        self.unknown_sni_at = now
        names = schema.parse_unknown_sni(msg)
        busy = getattr(self, "unknown_sni_task", None)
        if names and (busy is None or busy.done()):
            # in the background, off the shared database thread: queueing the decision must
            # not hold up this node's sync (nor other nodes') while the broker is slow
            self.unknown_sni_task = asyncio.create_task(
                database_sync_to_async(sni.reported, thread_sensitive=False)(names))

    def _answered(self, nonce, version):
        if nonce not in self.nonces:
            log.info("sync: node %s answered an unknown nonce %r", self.node_name, nonce)
        self.nonces.pop(nonce, None)
        if self.inflight and self.inflight[0] == version:
            self.inflight = None

    # ------------------------------------------------------------ group hints

    async def config_changed(self, event):
        self.schedule_check()

    async def health_changed(self, event):
        if not self.greeted:
            return
        targets = event.get("targets") or {}
        await self.send(text_data=json.dumps({
            "type": schema.MSG_HEALTH,
            "targets": {str(k): bool(v) for k, v in targets.items()},
        }))

    def schedule_check(self):
        """Coalesce hints: one check after the window, however many hints arrive."""
        if not self.greeted:
            return
        if self.pending_check is None or self.pending_check.done():
            self.pending_check = asyncio.create_task(self._delayed_check())

    async def _delayed_check(self):
        await asyncio.sleep(float(settings.SWITCHYARD_PUSH_COALESCE_SECONDS))
        # Hints arriving from now on schedule a new check: none is lost.
        self.pending_check = None
        try:
            await self.check_and_push()
        except Exception:
            log.exception("sync: push check for node %s failed", self.node_name)

    async def poll_loop(self, interval):
        """Embedded mode: notice versions stored by other processes."""
        while True:
            await asyncio.sleep(interval)
            try:
                latest = await database_sync_to_async(latest_version_number)()
            except Exception:
                log.exception("sync: polling the latest version failed")
                continue
            if latest is not None and latest != self.known_latest:
                self.known_latest = latest
                self.schedule_check()
            await self.sync_health()

    async def sync_health(self):
        """Send the whole health state when its generation moved since we last sent it.

        Snapshots carry no health, so a new connection always gets it; afterwards the
        generation (one row) is compared on heartbeats and polls, which repairs lost
        ``health.changed`` hints (in embedded mode also those the datagram bridge lost).
        """
        try:
            generation = await database_sync_to_async(health_generation)()
            if generation == self.health_generation:
                return
            generation, state = await database_sync_to_async(health_snapshot)()
        except Exception:
            log.exception("sync: reading health state for node %s failed", self.node_name)
            return
        self.health_generation = generation
        await self.send(text_data=json.dumps(health_message(state)))

    # ------------------------------------------------------------ pushing

    async def check_and_push(self):
        """Read the truth from the database; push when the node lacks the current version."""
        async with self.push_lock:
            inflight = None
            if self.inflight and time.monotonic() - self.inflight[1] < PUSH_ANSWER_TIMEOUT:
                inflight = self.inflight[0]
            try:
                plan, latest = await database_sync_to_async(plan_push)(
                    self.node_id, self.node_hash, inflight)
            except Exception:  # e.g. a private key that cannot be decrypted
                log.exception("sync: cannot prepare a push for node %s", self.node_name)
                return
            if latest is not None:
                self.known_latest = latest
            if plan is None:
                return
            nonce = secrets.token_hex(8)
            frame = await asyncio.to_thread(
                schema.encode_push, plan.version, plan.digest, nonce, plan.snapshot)
            self.nonces[nonce] = (plan.version, plan.digest)
            while len(self.nonces) > 32:  # a node that never answers must not grow this
                self.nonces.pop(next(iter(self.nonces)))
            self.inflight = (plan.version, time.monotonic())
            await self.send(bytes_data=frame)
            log.info("sync: pushed v%s (%s, %d bytes) to node %s", plan.version,
                     plan.digest[:12], len(frame), self.node_name)


# ---------------------------------------------------------------- message helpers

def bearer_token(scope) -> str:
    for name, value in scope.get("headers") or []:
        if name.lower() == b"authorization":
            try:
                scheme, _, token = value.decode("latin-1").strip().partition(" ")
            except (AttributeError, UnicodeDecodeError):
                return ""
            if scheme.lower() == "bearer":
                return token.strip()
    return ""


def bound_errors(errors) -> list[dict]:
    """A node's NACK errors as a bounded list of {path, message}."""
    if not isinstance(errors, list):
        errors = [{"path": "", "message": "node sent no structured errors"}] if errors is None \
            else [{"path": "", "message": str(errors)}]
    out = []
    for e in errors[:MAX_NACK_ERRORS]:
        if isinstance(e, dict):
            path, message = e.get("path", ""), e.get("message", "")
        else:
            path, message = "", e
        out.append({"path": str(path)[:MAX_ERROR_PATH], "message": str(message)[:MAX_ERROR_MESSAGE]})
    if len(errors) > MAX_NACK_ERRORS:
        out.append({"path": "", "message": f"... and {len(errors) - MAX_NACK_ERRORS} more errors"})
    if not out:
        out.append({"path": "", "message": "node rejected the configuration without details"})
    return out


def _opt_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _opt_str(value):
    return value[:64] if isinstance(value, str) and value else None


# ---------------------------------------------------------------- ORM helpers (sync)

def authenticate_node(token: str):
    """(id, name) of the active node holding this token, else None."""
    row = (Node.objects.filter(token_hash=hash_token(token), revoked=False)
           .values_list("id", "name").first())
    return tuple(row) if row else None


def mark_connected(node_id, software, workers):
    now = timezone.now()
    updated = Node.objects.filter(pk=node_id, revoked=False).update(
        connected=True, connected_since=now, last_seen=now,
        software_version=software, workers=workers)
    return bool(updated), now


def mark_disconnected(node_id, connected_since):
    # Only if no newer connection of the same node said hello meanwhile.
    Node.objects.filter(pk=node_id, connected_since=connected_since).update(
        connected=False, last_seen=timezone.now())


def touch_node(node_id) -> bool:
    return bool(Node.objects.filter(pk=node_id, revoked=False).update(last_seen=timezone.now()))


def latest_version_number():
    return ConfigVersion.objects.aggregate(n=Max("number"))["n"]


def plan_push(node_id, node_hash, inflight_version):
    """(PushPlan or None, latest version number or None).

    Push the current version when the node's hash differs, unless this node
    rejected exactly that version or it is already on its way to the node.
    """
    latest = ConfigVersion.objects.order_by("-number").only("number", "sha256").first()
    if latest is None:
        return None, None
    if latest.sha256 == node_hash or latest.number == inflight_version:
        return None, latest.number
    rejected = Node.objects.filter(pk=node_id).values_list("rejected_version", flat=True).first()
    if rejected is not None and rejected == latest.number:
        return None, latest.number
    snapshot = ConfigVersion.objects.values_list("snapshot", flat=True).get(pk=latest.pk)
    return PushPlan(latest.number, latest.sha256, materialized(latest.number, latest.sha256, snapshot)), \
        latest.number


_materialized_cache: dict[tuple[int, str], dict] = {}


def materialized(number, digest, snapshot):
    """The snapshot with private keys filled in (one version cached for many nodes)."""
    key = (number, digest)
    cached = _materialized_cache.get(key)
    if cached is None:
        cached = materialize(snapshot)
        _materialized_cache.clear()
        _materialized_cache[key] = cached
    return cached


def record_ack(node_id, nonce, version, digest, apply_ms):
    now = timezone.now()
    with transaction.atomic():
        Node.objects.filter(pk=node_id).update(
            applied_version=version, applied_hash=digest, last_ack=now,
            last_apply_ms=apply_ms, last_seen=now)
        NodeEvent.objects.create(node_id=node_id, kind=NodeEvent.ACK, version=version,
                                 sha256=digest, nonce=nonce, apply_ms=apply_ms)


def record_nack(node_id, nonce, version, digest, errors):
    """Record the NACK, quarantine the objects it names (publishing the rest), and alert
    the platform about what no quarantine covers."""
    now = timezone.now()
    with transaction.atomic():
        Node.objects.filter(pk=node_id).update(
            rejected_version=version, rejected_hash=digest, last_error=errors,
            last_error_at=now, last_seen=now)
        NodeEvent.objects.create(node_id=node_id, kind=NodeEvent.NACK, version=version,
                                 sha256=digest, nonce=nonce, errors=errors)
    node = Node.objects.get(pk=node_id)
    try:
        if quarantine_rejected(node, version, errors):
            return
    except Exception:
        log.exception("sync: quarantining what node %s rejected in v%s failed", node.name, version)
    try:
        node_rejected_config(node, version, errors)
    except Exception:
        log.exception("sync: the node_rejected_config alert hook failed")
