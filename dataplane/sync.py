"""The data-plane side of config sync: a WebSocket client to the control plane.

``SyncClient.run()`` connects to ``/ws/dataplane/`` with the node token, says hello
with the version and hash the node runs, heartbeats every ``schema.HEARTBEAT_SECONDS``,
applies pushed snapshots (newest only: a single-slot mailbox drained by one apply
task), answers each push with an ACK or a NACK, writes every applied snapshot to the
cache directory, forwards upstream health to the node state, and reconnects with
jittered exponential backoff (0.5 s up to 30 s) forever, serving the last good config
meanwhile. No Django here.

The node state is duck-typed (``dataplane.applier.NodeState``, or a supervisor's
``dataplane.workers.Fanout``): attributes ``version``, ``hash``, ``ready``, ``metrics``
and ``outlier``; ``apply(version, digest, snapshot) -> float`` (ms; raises
``schema.SnapshotInvalid``; may also return an awaitable), and
``set_health({target_id: bool})``.

Rate limits: the state's ``ratelimits`` (``dataplane.ratelimit.RateLimits`` or the
supervisor's aggregate) is ticked every ``schema.RATELIMIT_SECONDS``; its demand report
goes to the control plane, whose ``ratelimit.shares`` answer sets the node's shares.

Traffic reports (``schema.MSG_STATS``): every ``stats_seconds`` (default
``schema.STATS_SECONDS``; 0 turns them off) the client sends the per-route deltas of
``state.metrics.delta_report()`` (or of the ``stats_source`` callable it was given)
and the targets ejected by passive health (``current_ejections``) and those in a run
of connect failures (``current_failing``), only when there was traffic or either
changed. Reports are telemetry: one that cannot be sent is dropped, never retried.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
import time
import zlib
from typing import Any, Callable

import aiohttp

from dataplane import cache, schema
from dataplane.ondemand import UNKNOWN as UNKNOWN_SNI

log = logging.getLogger("switchyard.sync")

SOFTWARE_VERSION = "switchyard-dataplane/0.1.0"
BACKOFF_MIN = 0.5
PROCESS_STARTED = time.time()  # reported in hello: the node's uptime
BACKOFF_MAX = 30.0
WS_PING_SECONDS = 30.0  # WebSocket-level ping: notices a dead TCP connection


class SyncClient:
    def __init__(self, url: str, token: str, state: Any, cache_dir, node_name: str,
                 workers: int = 1, software: str = SOFTWARE_VERSION, *,
                 heartbeat_seconds: float = schema.HEARTBEAT_SECONDS,
                 backoff_min: float = BACKOFF_MIN, backoff_max: float = BACKOFF_MAX,
                 ssl: Any = True, stats_seconds: float = schema.STATS_SECONDS,
                 stats_source: Callable[[], dict] | None = None):
        self.url = url
        self.token = token
        self.state = state
        self.cache_dir = cache_dir
        self.node_name = node_name
        self.workers = workers
        self.software = software
        self.heartbeat_seconds = heartbeat_seconds
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.ssl = ssl
        self.stats_seconds = stats_seconds
        self.stats_source = stats_source or state.metrics.delta_report
        self._last_report = time.monotonic()
        self._last_ejections: list[dict] = []
        self._last_failing: list[dict] = []
        # Observable state, for the admin endpoint and tests.
        self.connected = False
        self.stats = {"connects": 0, "connect_failures": 0, "pushes": 0, "superseded": 0,
                      "acks": 0, "nacks": 0, "reports": 0}
        self.last_error = ""
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._slot: tuple[aiohttp.ClientWebSocketResponse, bytes] | None = None
        self._slot_ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._apply_task: asyncio.Task | None = None
        # Diagnostics: a dataplane.diagnostics.NodeDiagnostics set by the node,
        # fed the diagnostic commands and drained into messages while connected.
        self.diagnostics: Any = None
        self.started = PROCESS_STARTED

    # ------------------------------------------------------------ lifecycle

    async def restore_from_cache(self) -> bool:
        """Apply the cached last-known-good snapshot if the state runs nothing yet.

        ``run()`` calls this first; a node process that restores earlier (to serve
        before the event loop runs anything else) makes it a no-op."""
        if self.state.version is not None:
            return False
        cached = cache.load(self.cache_dir)
        if cached is None:
            return False
        version, digest, snapshot = cached
        try:
            result = self.state.apply(version, digest, snapshot)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # noqa: BLE001 - e.g. a cache written by an older, incompatible node
            log.error("sync: cannot serve cached v%s: %s", version, exc)
            return False
        log.info("sync: serving cached v%s (%s) until the control plane answers", version, digest[:12])
        return True

    async def run(self) -> None:
        """Connect, serve, reconnect; returns only after ``close()``."""
        await self.restore_from_cache()
        self._apply_task = asyncio.create_task(self._apply_loop(), name="switchyard-apply")
        ratelimit_task = asyncio.create_task(self._ratelimit_loop(), name="switchyard-ratelimit")
        delay = self.backoff_min
        timeout = aiohttp.ClientTimeout(total=None, connect=15, sock_connect=10, sock_read=30)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                while not self._stop.is_set():
                    try:
                        ws = await session.ws_connect(
                            self.url, headers={"Authorization": f"Bearer {self.token}"},
                            max_msg_size=schema.MAX_PUSH_BYTES, heartbeat=WS_PING_SECONDS,
                            autoping=True, ssl=self.ssl,
                            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0))
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - whatever the cause, retry later
                        self.stats["connect_failures"] += 1
                        self.last_error = _describe(exc)
                        log.warning("sync: cannot connect to %s: %s", self.url, self.last_error)
                    else:
                        delay = self.backoff_min  # a successful connection resets the backoff
                        try:
                            await self._serve(ws)
                        except asyncio.CancelledError:
                            raise
                        except Exception as exc:  # noqa: BLE001 - whatever ended it, reconnect
                            self.last_error = _describe(exc)
                            log.warning("sync: connection to %s failed: %s", self.url, self.last_error)
                        finally:
                            self.connected = False
                            self._ws = None
                            await ws.close()
                    if self._stop.is_set():
                        break
                    # Equal jitter: half the ceiling plus a random part, within [min, max].
                    pause = min(self.backoff_max, max(self.backoff_min, random.uniform(delay / 2, delay)))
                    delay = min(self.backoff_max, delay * 2)
                    log.info("sync: reconnecting in %.2f s (serving v%s meanwhile)", pause, self.state.version)
                    await self._sleep(pause)
        finally:
            self.connected = False
            ratelimit_task.cancel()
            await asyncio.gather(ratelimit_task, return_exceptions=True)
            if self._apply_task is not None:
                self._apply_task.cancel()
                await asyncio.gather(self._apply_task, return_exceptions=True)
                self._apply_task = None

    async def close(self) -> None:
        self._stop.set()
        ws = self._ws
        if ws is not None and not ws.closed:
            await ws.close()

    async def _sleep(self, seconds: float) -> None:
        """Wait before reconnecting; ``close()`` cuts it short."""
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    # ------------------------------------------------------------ one connection

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self.connected = True
        self.stats["connects"] += 1
        log.info("sync: connected to %s as %s", self.url, self.node_name)
        await ws.send_json({
            "type": schema.MSG_HELLO, "version": self.state.version, "hash": self.state.hash,
            "software": self.software, "workers": self.workers, "started": round(self.started, 3),
        })
        heartbeat = asyncio.create_task(self._heartbeat_loop(ws), name="switchyard-heartbeat")
        reporter = asyncio.create_task(self._stats_loop(ws), name="switchyard-stats")
        sni_reporter = asyncio.create_task(self._unknown_sni_loop(ws), name="switchyard-unknown-sni")
        diag = (asyncio.create_task(self.diagnostics.run(), name="switchyard-diagnostics")
                if self.diagnostics is not None else None)
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self._post(ws, msg.data)
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    self._on_text(msg.data)
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    raise ws.exception() or ConnectionError("WebSocket error")
            if not self._stop.is_set():
                log.warning("sync: control plane closed the connection (code %s)", ws.close_code)
        finally:
            heartbeat.cancel()
            reporter.cancel()
            sni_reporter.cancel()
            if diag is not None:
                diag.cancel()
            await asyncio.gather(heartbeat, reporter, sni_reporter, *([diag] if diag else []),
                                 return_exceptions=True)

    async def _heartbeat_loop(self, ws) -> None:
        while not ws.closed:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await ws.send_json({"type": schema.MSG_HEARTBEAT,
                                    "version": self.state.version, "hash": self.state.hash})
            except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
                log.info("sync: heartbeat failed: %s", exc)
                await ws.close()
                return

    async def _stats_loop(self, ws) -> None:
        if not self.stats_seconds or self.stats_seconds <= 0:
            return
        while not ws.closed:
            await asyncio.sleep(self.stats_seconds)
            try:
                await self.send_stats(ws)
            except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
                log.info("sync: sending a traffic report failed: %s", exc)
            except Exception:  # a bug in reporting must never end the sync connection
                log.exception("sync: building a traffic report failed")

    async def _unknown_sni_loop(self, ws) -> None:
        """On-demand TLS: every ``schema.UNKNOWN_SNI_SECONDS``, the SNI names without a
        certificate seen since (``dataplane.ondemand``), one message; dropped when it
        cannot be sent (a name is noted again on its next handshake)."""
        while not ws.closed:
            await asyncio.sleep(schema.UNKNOWN_SNI_SECONDS)
            names = UNKNOWN_SNI.report()
            if not names:
                continue
            try:
                await ws.send_json({"type": schema.MSG_UNKNOWN_SNI, "names": names})
            except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
                log.info("sync: reporting unknown SNI names failed: %s", exc)

    async def send_stats(self, ws) -> int:
        """Send the traffic since the previous report; returns the messages sent."""
        routes = self.stats_source() or {}
        ejections = current_ejections(self.state)
        failing = current_failing(self.state)
        now = time.monotonic()
        interval, self._last_report = now - self._last_report, now
        if not routes and ejections == self._last_ejections and failing == self._last_failing:
            return 0
        self._last_ejections = ejections
        self._last_failing = failing
        items = sorted(routes.items())
        chunks = [items[i:i + schema.MAX_STATS_ROUTES]
                  for i in range(0, len(items), schema.MAX_STATS_ROUTES)] or [[]]
        for chunk in chunks:
            await ws.send_json({
                "type": schema.MSG_STATS, "interval": round(interval, 3),
                "routes": {str(rid): entry for rid, entry in chunk},
                "ejections": ejections,
                "failing": failing,
            })
            self.stats["reports"] += 1
        return len(chunks)

    def _on_text(self, data: str) -> None:
        try:
            msg = json.loads(data)
        except ValueError:
            log.warning("sync: ignoring a text frame that is not JSON")
            return
        if not isinstance(msg, dict):
            return
        if msg.get("type") == schema.MSG_HEALTH:
            targets = msg.get("targets")
            if not isinstance(targets, dict):
                return
            try:
                health = {int(k): bool(v) for k, v in targets.items()}
            except (TypeError, ValueError):
                log.warning("sync: ignoring a health message with bad target ids")
                return
            self.state.set_health(health)
        elif msg.get("type") == schema.MSG_RATELIMIT_SHARES:
            try:
                self.state.ratelimits.apply_shares(msg)
            except schema.RateLimitMessageInvalid as exc:
                log.warning("sync: ignoring an invalid rate-limit shares message: %s", exc)
        elif self.diagnostics is not None and msg.get("type") in schema.DIAGNOSTIC_COMMANDS:
            self.diagnostics.handle(msg)
        else:
            log.debug("sync: ignoring message type %r", msg.get("type"))

    async def _ratelimit_loop(self) -> None:
        """Every ``schema.RATELIMIT_SECONDS`` for the client's whole life: tick the node's
        rate limits (``state.ratelimits``, dataplane/ratelimit.py; this also falls back to
        local shares when none came lately) and, while connected, report their demand.
        A report that cannot be sent is dropped: the next one replaces it."""
        limits = getattr(self.state, "ratelimits", None)  # None: a state without limits
        if limits is None:
            return
        while True:
            await asyncio.sleep(schema.RATELIMIT_SECONDS)
            try:
                report = limits.report()
                if inspect.isawaitable(report):  # a supervisor gathers its workers' reports
                    report = await report
                ws = self._ws
                if report is not None and ws is not None and not ws.closed:
                    await ws.send_json(report)
            except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
                log.info("sync: sending a rate-limit report failed: %s", exc)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must never end the sync client
                log.exception("sync: building a rate-limit report failed")

    async def send_diagnostic(self, message: dict) -> None:
        """Send a diagnostics message on the current connection; dropped when there is
        none (the control plane times out or the viewer sees nothing)."""
        ws = self._ws
        if ws is None or ws.closed:
            return
        try:
            await ws.send_json(message)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            log.info("sync: sending %s failed: %s", message.get("type"), exc)

    # ------------------------------------------------------------ applying pushes

    def _post(self, ws, frame: bytes) -> None:
        """Single-slot mailbox: a newer push replaces one that is still waiting."""
        self.stats["pushes"] += 1
        if self._slot is not None:
            self.stats["superseded"] += 1
            log.info("sync: a newer push supersedes one not yet applied")
        self._slot = (ws, frame)
        self._slot_ready.set()

    async def _apply_loop(self) -> None:
        while True:
            await self._slot_ready.wait()
            self._slot_ready.clear()
            item, self._slot = self._slot, None
            if item is None:
                continue
            try:
                await self._apply_push(*item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sync: handling a push failed")

    async def _apply_push(self, ws, frame: bytes) -> None:
        try:
            msg, actual = await asyncio.to_thread(_decode, frame)
        except (ValueError, zlib.error, MemoryError) as exc:
            log.error("sync: undecodable push ignored: %s", exc)
            return
        version, digest, nonce = msg.get("version"), msg.get("hash"), msg.get("nonce")
        snapshot = msg.get("snapshot")
        if isinstance(version, bool) or not isinstance(version, int) or not isinstance(digest, str):
            log.error("sync: push without a version or hash ignored")
            return
        if not isinstance(snapshot, dict):
            await self._nack(ws, nonce, version, digest,
                             [schema.SchemaError("snapshot", "must be an object").as_dict()])
            return
        if actual != digest:
            await self._nack(ws, nonce, version, digest, [schema.SchemaError(
                "hash", f"push says {digest} but the snapshot hashes to {actual}").as_dict()])
            return
        if version == self.state.version and digest == self.state.hash:
            await self._ack(ws, nonce, version, digest, 0.0)
            return
        try:
            result = self.state.apply(version, digest, snapshot)
            if inspect.isawaitable(result):
                result = await result
            apply_ms = float(result)
        except asyncio.CancelledError:
            raise
        except schema.SnapshotInvalid as exc:
            log.error("sync: rejected v%s: %s", version, exc)
            await self._nack(ws, nonce, version, digest, [e.as_dict() for e in exc.errors])
            return
        except Exception as exc:
            log.exception("sync: applying v%s failed", version)
            await self._nack(ws, nonce, version, digest,
                             [{"path": "", "message": f"apply failed: {_describe(exc)}"}])
            return
        log.info("sync: applied v%s (%s) in %.1f ms", version, digest[:12], apply_ms)
        try:
            await asyncio.to_thread(cache.save, self.cache_dir, version, digest, snapshot)
        except Exception:
            log.exception("sync: writing the snapshot cache failed (v%s still applied)", version)
        await self._ack(ws, nonce, version, digest, apply_ms)

    async def _ack(self, ws, nonce, version, digest, apply_ms) -> None:
        self.stats["acks"] += 1
        await self._answer(ws, {"type": schema.MSG_ACK, "nonce": nonce, "version": version,
                                "hash": digest, "apply_ms": round(apply_ms, 3)})

    async def _nack(self, ws, nonce, version, digest, errors: list[dict]) -> None:
        self.stats["nacks"] += 1
        await self._answer(ws, {
            "type": schema.MSG_NACK, "nonce": nonce, "version": version, "hash": digest,
            "running_version": self.state.version, "running_hash": self.state.hash,
            "errors": errors[:50],
        })

    async def _answer(self, ws, message: dict) -> None:
        # Answers go on the connection the push came from; if it is gone, the next
        # hello tells the control plane what runs.
        if ws.closed:
            log.info("sync: connection gone; %s for v%s not sent", message["type"], message["version"])
            return
        try:
            await ws.send_json(message)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            log.info("sync: sending %s failed: %s", message["type"], exc)


def current_ejections(state: Any) -> list[dict]:
    """Targets ejected now by passive health, as ``[{"target_id", "until"}]`` with
    ``until`` in epoch seconds. The one place that knows the outlier detector's API
    (``state.outlier.current()``, see dataplane/outlier.py)."""
    now = time.time()
    out = []
    for e in state.outlier.current()[:schema.MAX_STATS_EJECTIONS]:
        try:
            out.append({"target_id": int(e["target"]),
                        "until": round(now + max(0.0, float(e["remaining_seconds"])), 1)})
        except (KeyError, TypeError, ValueError):
            continue
    out.sort(key=lambda e: e["target_id"])
    return out


def current_failing(state: Any) -> list[dict]:
    """Runs of connect failures (``outlier.OutlierDetector.failing``) as
    ``[{"target_id", "count", "code", "since"}]``; ``[]`` when the state has none."""
    source = getattr(state.outlier, "failing", None)
    if source is None:
        return []
    out = []
    for e in source()[:schema.MAX_STATS_FAILING]:
        try:
            out.append({"target_id": int(e["target"]), "count": int(e["count"]),
                        "code": str(e["code"]), "since": float(e["since"])})
        except (KeyError, TypeError, ValueError):
            continue
    out.sort(key=lambda e: e["target_id"])
    return out


def _decode(frame: bytes) -> tuple[dict, str | None]:
    msg = schema.decode_push(frame)
    snapshot = msg.get("snapshot")
    return msg, schema.snapshot_hash(snapshot) if isinstance(snapshot, dict) else None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
