"""One data-plane node process: listeners, admin, config source, drain on SIGTERM."""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass
from typing import Any, Sequence

from dataplane import schema

DRAIN_SECONDS = 60.0
ENV_PREFIX = "SWITCHYARD_NODE_"


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
    worker_fd: int = -1  # set on worker processes started by the supervisor (workers.py)
    stats_seconds: float = schema.STATS_SECONDS


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV_PREFIX + name.upper().replace("-", "_"), default)


def parse_args(argv: Sequence[str] | None = None) -> NodeOptions:
    p = argparse.ArgumentParser(
        prog="python -m dataplane",
        description="Run one Switchyard data-plane node. Every flag also reads "
                    "SWITCHYARD_NODE_<NAME> (e.g. SWITCHYARD_NODE_HTTP).")
    p.add_argument("--name", default=_env("name", socket.gethostname()))
    p.add_argument("--http", default=_env("http", "127.0.0.1:8080"), help="HTTP listener")
    p.add_argument("--https", default=_env("https", "127.0.0.1:8443"),
                   help="HTTPS listener, certificate chosen by SNI; 'off' or empty: none")
    p.add_argument("--default-certificate-name",
                   default=_env("default_certificate_name", ""),
                   help="certificate served when SNI matches none (default: the first "
                        "platform certificate)")
    p.add_argument("--admin", default=_env("admin", "127.0.0.1:9901"),
                   help="admin listener: /healthz /readyz /metrics")
    p.add_argument("--control-plane", default=_env("control_plane",
                                                   "ws://127.0.0.1:8000/ws/dataplane/"),
                   help="sync WebSocket URL; empty = standalone")
    p.add_argument("--token", default=_env("token", ""), help="node token")
    p.add_argument("--token-file", default=_env("token_file", ""), help="file holding the token")
    p.add_argument("--cache-dir", default=_env("cache_dir", "var/node-cache"))
    p.add_argument("--trusted-proxies", default=_env("trusted_proxies", ""),
                   help="comma-separated CIDRs whose X-Forwarded-* values are kept")
    p.add_argument("--access-log", default=_env("access_log", "-"),
                   help="'-' for stdout, 'off', or a file path")
    p.add_argument("--snapshot", default=_env("snapshot", ""),
                   help="standalone: serve this snapshot JSON file (no control plane); "
                        "SIGHUP reloads it")
    p.add_argument("--workers", type=int, default=int(_env("workers", "1")),
                   help="worker processes sharing the listeners (SO_REUSEPORT); with more "
                        "than 1, a supervisor process holds the one control-plane "
                        "connection and the admin listener")
    p.add_argument("--worker-cpu-affinity", choices=("off", "auto"),
                   default=_env("worker_cpu_affinity", "off"),
                   help="with --workers N: 'auto' pins worker i to the i-th allowed CPU "
                        "(like nginx's worker_cpu_affinity auto); 'off' lets the kernel move them")
    p.add_argument("--max-connections", type=int, default=int(_env("max_connections", "0")),
                   help="concurrent client connections per worker (0: no cap); more are "
                        "closed at once")
    p.add_argument("--header-timeout", type=float, default=float(_env("header_timeout", "10")),
                   help="seconds a client has to send a complete request head")
    p.add_argument("--body-idle-timeout", type=float,
                   default=float(_env("body_idle_timeout", "30")),
                   help="seconds a client may send nothing while its request body is "
                        "incomplete before the connection is cut")
    p.add_argument("--keepalive-timeout", type=float,
                   default=float(_env("keepalive_timeout", "60")),
                   help="seconds an idle keep-alive client connection is kept")
    p.add_argument("--stats-seconds", type=float,
                   default=float(_env("stats_seconds", str(schema.STATS_SECONDS))),
                   help="seconds between traffic reports to the control plane (0: none)")
    p.add_argument("--worker-fd", type=int, default=-1, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.workers < 1:
        p.error("--workers must be at least 1")
    token = a.token
    if not token and a.token_file:
        with open(a.token_file) as f:
            token = f.read().strip()
    nets = tuple(n.strip() for n in a.trusted_proxies.split(",") if n.strip())
    for n in nets:
        try:
            ipaddress.ip_network(n, strict=False)
        except ValueError:
            p.error(f"--trusted-proxies: {n!r} is not a network")
    opts = NodeOptions(a.name, a.http, a.https, a.admin, a.control_plane, token, a.cache_dir,
                       nets, a.access_log, a.snapshot, a.workers,
                       default_certificate=a.default_certificate_name)
    opts.max_connections = a.max_connections
    opts.worker_cpu_affinity = a.worker_cpu_affinity
    opts.header_timeout = a.header_timeout
    opts.body_idle_timeout = a.body_idle_timeout
    opts.keepalive_timeout = a.keepalive_timeout
    opts.worker_fd = a.worker_fd
    opts.stats_seconds = a.stats_seconds
    return opts


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def require_c_parser() -> None:
    """SPEC 4: the node refuses to start without the llhttp C extension."""
    import httptools
    from httptools.parser import parser as cparser
    ok = (getattr(cparser, "__file__", "") or "").endswith((".so", ".pyd"))
    if not ok or httptools.HttpRequestParser is not cparser.HttpRequestParser:
        raise SystemExit("switchyard: httptools is not the C (llhttp) extension; refusing to start")


def load_snapshot_file(path: str) -> tuple[int, str, dict]:
    """A snapshot file is either the snapshot itself or {version, hash, snapshot}."""
    with open(path, "rb") as f:
        data = json.load(f)
    if isinstance(data, dict) and isinstance(data.get("snapshot"), dict):
        snap = data["snapshot"]
        return int(data.get("version", 1)), data.get("hash") or schema.snapshot_hash(snap), snap
    return 1, schema.snapshot_hash(data), data


class Node:
    def __init__(self, opts: NodeOptions):
        from dataplane.accesslog import AccessLog
        from dataplane.applier import NodeState
        self.opts = opts
        self.state = NodeState(node_name=opts.name,
                               default_certificate=opts.default_certificate)
        self.log = AccessLog(opts.access_log, opts.name)
        from dataplane.diagnostics import HUB
        HUB.node = opts.name
        self.servers: list[asyncio.AbstractServer] = []
        self.proxies: list[Any] = []
        self.admin_runner = None
        self.sync = None
        self.stopping = asyncio.Event()

    def load_initial(self) -> None:
        opts = self.opts
        if opts.snapshot:
            self.reload_snapshot()
            return
        from dataplane import cache
        cached = cache.load(opts.cache_dir)
        if cached is not None:
            version, digest, snap = cached
            try:
                self.state.apply(version, digest, snap)
            except schema.SnapshotInvalid as exc:
                print(f"switchyard: cached snapshot rejected: {exc}", file=sys.stderr)

    def reload_snapshot(self) -> None:
        try:
            version, digest, snap = load_snapshot_file(self.opts.snapshot)
            ms = self.state.apply(version, digest, snap)
            print(f"switchyard: applied {self.opts.snapshot} version {version} in {ms:.1f} ms",
                  file=sys.stderr)
        except (OSError, ValueError, schema.SnapshotInvalid) as exc:
            print(f"switchyard: snapshot {self.opts.snapshot} rejected: {exc}", file=sys.stderr)

    async def start(self) -> None:
        from dataplane.forwarder import ProxyServer
        loop = asyncio.get_running_loop()
        opts = self.opts
        if opts.worker_fd >= 0:  # a worker: config comes from the supervisor (workers.py)
            from dataplane.workers import WorkerLink
            self.link = WorkerLink(opts.worker_fd, self.state, self.stopping.set)
            await self.link.initial()
        else:
            self.load_initial()
        tls_sock = tls_addr = None
        if opts.https and opts.https != "off":
            thost, tport = split_addr(opts.https)
            tls_sock = socket.socket(socket.AF_INET6 if ":" in thost else socket.AF_INET)
            tls_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tls_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            tls_sock.bind((thost, tport))
            tls_addr = (thost, tls_sock.getsockname()[1])
        host, port = split_addr(opts.http)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]
        proxy = ProxyServer(self.state, self.log, port, opts.trusted_proxies,
                            https_port=tls_addr[1] if tls_addr else 443)
        self.proxies.append(proxy)
        self.servers.append(await loop.create_server(proxy, sock=sock, backlog=4096))
        https_note = "https off"
        if tls_sock is not None:
            from dataplane import tls
            tls_proxy = ProxyServer(self.state, self.log, tls_addr[1], opts.trusted_proxies,
                                    scheme=b"https")
            self.proxies.append(tls_proxy)
            self.servers.append(await loop.create_server(
                tls_proxy, sock=tls_sock, backlog=4096, ssl=tls.listener_context(self.state),
                ssl_handshake_timeout=tls.HANDSHAKE_TIMEOUT))
            https_note = f"https={tls_addr[0]}:{tls_addr[1]}"
        for p in self.proxies:
            p.header_timeout = opts.header_timeout
            p.body_idle_timeout = opts.body_idle_timeout
            p.keepalive_timeout = opts.keepalive_timeout
            p.max_connections = opts.max_connections
        if opts.worker_fd >= 0:
            await self.link.ready()
            self._link_task = asyncio.ensure_future(self.link.run())
        else:  # workers leave the admin listener (aiohttp, prometheus_client) to the supervisor
            from dataplane import admin
            ahost, aport = split_addr(opts.admin)
            self.admin_runner, aport = await admin.start(self.state, ahost, aport)
            print(f"switchyard: node {opts.name} listening http={host}:{port} "
                  f"admin={ahost}:{aport} {https_note}", file=sys.stderr, flush=True)
        from dataplane.upstream import RESERVED  # tenant pools never reach these (SPEC 7)
        RESERVED.reserve([f"{host}:{port}", f"{ahost}:{aport}" if self.admin_runner else opts.admin,
                          opts.control_plane] + ([f"{tls_addr[0]}:{tls_addr[1]}"] if tls_addr else []))
        if not opts.snapshot and opts.control_plane:
            from dataplane.sync import SyncClient
            from dataplane.diagnostics import NodeDiagnostics
            self.sync = SyncClient(url=opts.control_plane, token=opts.token, state=self.state,
                                   cache_dir=opts.cache_dir, node_name=opts.name,
                                   workers=opts.workers, stats_seconds=opts.stats_seconds)
            self.sync.diagnostics = NodeDiagnostics(
                self.sync.send_diagnostic, node_name=opts.name,
                listeners={"http": f"{host}:{port}",
                           "https": f"{tls_addr[0]}:{tls_addr[1]}" if tls_addr else ""})
            self._sync_task = asyncio.ensure_future(self.sync.run())
        self._ticker = asyncio.ensure_future(self.tick())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        if opts.snapshot:
            loop.add_signal_handler(signal.SIGHUP, self.reload_snapshot)

    async def tick(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(0.2)
            self.log.flush()
            n += 1
            if n % 5 == 0:
                for p in self.proxies:
                    p.sweep()
                self.state.upstreams.sweep()

    async def stop(self) -> None:
        """Stop accepting, drain in-flight requests (60 s at most), then close everything."""
        loop = asyncio.get_running_loop()
        for s in self.servers:
            s.close()
        for p in self.proxies:
            p.drain()
        deadline = loop.time() + DRAIN_SECONDS
        while any(p.connections for p in self.proxies) and loop.time() < deadline:
            await asyncio.sleep(0.05)
            for p in self.proxies:
                p.drain()
        for p in self.proxies:
            for c in list(p.connections):
                c.transport.abort()
        if self.sync is not None:
            await self.sync.close()
            self._sync_task.cancel()
        self._ticker.cancel()
        self.state.upstreams.close()
        if self.admin_runner is not None:
            await self.admin_runner.cleanup()
        self.log.close()

    async def run(self) -> int:
        await self.start()
        await self.stopping.wait()
        await self.stop()
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["probe"]:  # python -m dataplane probe URL [--timeout] [--insecure] [--json]
        from dataplane import probe
        return probe.main(args[1:])
    opts = parse_args(argv)
    require_c_parser()
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        if opts.workers > 1 and opts.worker_fd < 0:
            from dataplane.workers import Supervisor
            return runner.run(Supervisor(opts, sys.argv[1:] if argv is None else argv).run())
        return runner.run(Node(opts).run())
