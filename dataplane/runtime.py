"""What a node process and a ``--workers`` supervisor both do: their options, the
snapshot they serve first, ``--snapshot`` reloads on SIGHUP, listening sockets, the
admin listener, the sync client with its diagnostics, and the reserved endpoints."""
from __future__ import annotations

import asyncio
import inspect
import json
import signal
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable

from dataplane import cache, schema
from dataplane.applier import NodeState

DRAIN_SECONDS = 60.0


@dataclass
class NodeOptions:
    name: str
    http: str
    https: str
    admin: str
    control_plane: str
    token: str
    cache_dir: str
    trusted_proxies: tuple[str, ...]
    access_log: str
    snapshot: str
    workers: int = 1
    worker_cpu_affinity: str = "off"
    default_certificate: str = ""
    max_connections: int = 0
    header_timeout: float = 10.0
    body_idle_timeout: float = 30.0
    keepalive_timeout: float = 60.0
    worker_fd: int = -1  # set on worker processes started by a supervisor
    stats_seconds: float = schema.STATS_SECONDS

    @property
    def https_enabled(self) -> bool:
        return bool(self.https) and self.https != "off"


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def join_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_reuseport(addr: str) -> tuple[socket.socket, str]:
    """A TCP socket bound (not listening) to ``addr`` with ``SO_REUSEPORT``, so every
    process of a node binds the same address and the kernel spreads connections over
    them; and the address it got (port 0 becomes a concrete port)."""
    host, port = split_addr(addr)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock, join_addr(host, sock.getsockname()[1])


def load_snapshot_file(path: str) -> tuple[int, str, dict]:
    """A snapshot file is either the snapshot itself or {version, hash, snapshot}."""
    with open(path, "rb") as f:
        data = json.load(f)
    if isinstance(data, dict) and isinstance(data.get("snapshot"), dict):
        snap = data["snapshot"]
        return int(data.get("version", 1)), data.get("hash") or schema.snapshot_hash(snap), snap
    return 1, schema.snapshot_hash(data), data


def say(text: str) -> None:
    print(f"switchyard: {text}", file=sys.stderr, flush=True)


class Runtime:
    """The shared life of a node process and of a supervisor. ``config`` is what
    snapshots are applied to: ``apply(version, digest, snapshot)`` returning the
    milliseconds taken (or an awaitable of them), raising ``schema.SnapshotInvalid``."""

    def __init__(self, opts: NodeOptions):
        self.opts = opts
        self.state = NodeState(node_name=opts.name, default_certificate=opts.default_certificate)
        self.config: Any = self.state
        self.stopping = asyncio.Event()
        self.admin_runner = None
        self.sync = None
        self._sync_task: asyncio.Task | None = None

    async def apply(self, version: int, digest: str, snapshot: dict) -> float:
        result = self.config.apply(version, digest, snapshot)
        return await result if inspect.isawaitable(result) else result

    def applied_where(self) -> str:
        """Where a snapshot was applied, as the reload message ends."""
        return ""

    async def load_initial(self) -> None:
        """Serve at once: the ``--snapshot`` file, else the cached last good snapshot."""
        if self.opts.snapshot:
            await self.reload_snapshot()
            return
        cached = cache.load(self.opts.cache_dir)
        if cached is None:
            return
        try:
            await self.apply(*cached)
        except schema.SnapshotInvalid as exc:
            say(f"cached snapshot rejected: {exc}")

    async def reload_snapshot(self) -> None:
        """Apply the ``--snapshot`` file; a bad one is reported and the running config kept."""
        path = self.opts.snapshot
        try:
            version, digest, snap = load_snapshot_file(path)
            ms = await self.apply(version, digest, snap)
        except (OSError, ValueError, schema.SnapshotInvalid) as exc:
            say(f"snapshot {path} rejected: {exc}")
            return
        say(f"applied {path} version {version}{self.applied_where()} in {ms:.1f} ms")

    def handle_signals(self) -> None:
        """SIGTERM/SIGINT stop the node; with ``--snapshot``, SIGHUP reloads the file."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        if self.opts.snapshot:
            loop.add_signal_handler(signal.SIGHUP, self._reload_soon)

    def _reload_soon(self) -> None:
        asyncio.ensure_future(self.reload_snapshot())

    async def start_admin(self) -> str:
        """Start /healthz, /readyz and /metrics; returns the address it listens on."""
        from dataplane import admin  # aiohttp and prometheus_client: this process only
        host, port = split_addr(self.opts.admin)
        self.admin_runner, port = await admin.start(self.state, host, port)
        return join_addr(host, port)

    def announce(self, http: str, https: str, admin: str, more: str = "") -> None:
        https_note = f"https={https}" if https else "https off"
        say(f"node {self.opts.name} listening http={http} admin={admin} {https_note}{more}")

    def reserve(self, *listeners: str) -> None:
        """Tenant pools never reach this node's listeners nor its control plane."""
        from dataplane.upstream import RESERVED
        RESERVED.reserve([*listeners, self.opts.control_plane])

    def start_sync(self, listeners: dict[str, str],
                   relay: Callable[[dict], None] | None = None) -> None:
        """Connect to the control plane (unless standalone) and answer its diagnostics.
        ``relay``: forwards tail and capture commands to the processes that serve."""
        opts = self.opts
        if opts.snapshot or not opts.control_plane:
            return
        from dataplane.diagnostics import NodeDiagnostics
        from dataplane.sync import SyncClient
        self.sync = SyncClient(url=opts.control_plane, token=opts.token, state=self.config,
                               cache_dir=opts.cache_dir, node_name=opts.name,
                               workers=opts.workers, stats_seconds=opts.stats_seconds)
        self.sync.diagnostics = NodeDiagnostics(self.sync.send_diagnostic, node_name=opts.name,
                                                listeners=listeners, relay=relay)
        self._sync_task = asyncio.ensure_future(self.sync.run())

    async def stop_sync(self) -> None:
        if self.sync is not None:
            await self.sync.close()
            self._sync_task.cancel()

    async def stop_admin(self) -> None:
        if self.admin_runner is not None:
            await self.admin_runner.cleanup()
