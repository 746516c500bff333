"""One data-plane node process: listeners, admin, config source, drain on SIGTERM.
With ``--workers N`` this process becomes the supervisor of N such processes
(``dataplane.workers``); each of them is a ``Node`` fed by its worker link."""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import socket
import sys
from typing import Any, Sequence

from dataplane import schema
from dataplane.runtime import DRAIN_SECONDS, NodeOptions, Runtime, bind_reuseport

ENV_PREFIX = "SWITCHYARD_NODE_"

# (flag, fallback default, help, argparse extras); every flag also reads
# SWITCHYARD_NODE_<FLAG>, e.g. SWITCHYARD_NODE_HTTP. argparse converts string defaults
# with the flag's type, so environment values are checked like command-line ones.
FLAGS: tuple[tuple[str, str, str | None, dict], ...] = (
    ("--name", socket.gethostname(), None, {}),
    ("--http", "127.0.0.1:8080", "HTTP listener", {}),
    ("--https", "127.0.0.1:8443",
     "HTTPS listener, certificate chosen by SNI; 'off' or empty: none", {}),
    ("--default-certificate-name", "", "certificate served when SNI matches none (default: "
                                       "the first platform certificate)", {}),
    ("--admin", "127.0.0.1:9901", "admin listener: /healthz /readyz /metrics", {}),
    ("--control-plane", "ws://127.0.0.1:8000/ws/dataplane/",
     "sync WebSocket URL; empty = standalone", {}),
    ("--token", "", "node token", {}),
    ("--token-file", "", "file holding the token", {}),
    ("--cache-dir", "var/node-cache", None, {}),
    ("--trusted-proxies", "", "comma-separated CIDRs whose X-Forwarded-* values are kept", {}),
    ("--access-log", "-", "'-' for stdout, 'off', or a file path", {}),
    ("--snapshot", "", "standalone: serve this snapshot JSON file (no control plane); "
                       "SIGHUP reloads it", {}),
    ("--workers", "1", "worker processes sharing the listeners (SO_REUSEPORT); with more "
                       "than 1, a supervisor process holds the one control-plane connection "
                       "and the admin listener", {"type": int}),
    ("--worker-cpu-affinity", "off", "with --workers N: 'auto' pins worker i to the i-th "
                                     "allowed CPU (like nginx's worker_cpu_affinity auto); "
                                     "'off' lets the kernel move them",
     {"choices": ("off", "auto")}),
    ("--max-connections", "0", "concurrent client connections per worker (0: no cap); more "
                               "are closed at once", {"type": int}),
    ("--header-timeout", "10", "seconds a client has to send a complete request head",
     {"type": float}),
    ("--body-idle-timeout", "30", "seconds a client may send nothing while its request body "
                                  "is incomplete before the connection is cut", {"type": float}),
    ("--keepalive-timeout", "60", "seconds an idle keep-alive client connection is kept",
     {"type": float}),
    ("--stats-seconds", str(schema.STATS_SECONDS),
     "seconds between traffic reports to the control plane (0: none)", {"type": float}),
)


def _env(flag: str, default: str) -> str:
    return os.environ.get(ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_"), default)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dataplane",
        description="Run one Switchyard data-plane node. Every flag also reads "
                    "SWITCHYARD_NODE_<NAME> (e.g. SWITCHYARD_NODE_HTTP).")
    for flag, default, text, extra in FLAGS:
        p.add_argument(flag, default=_env(flag, default), help=text, **extra)
    p.add_argument("--worker-fd", type=int, default=-1, help=argparse.SUPPRESS)
    return p


def _networks(p: argparse.ArgumentParser, text: str) -> tuple[str, ...]:
    nets = tuple(n.strip() for n in text.split(",") if n.strip())
    for n in nets:
        try:
            ipaddress.ip_network(n, strict=False)
        except ValueError:
            p.error(f"--trusted-proxies: {n!r} is not a network")
    return nets


def _token(a: argparse.Namespace) -> str:
    if a.token or not a.token_file:
        return a.token
    with open(a.token_file) as f:
        return f.read().strip()


def parse_args(argv: Sequence[str] | None = None) -> NodeOptions:
    p = _parser()
    a = p.parse_args(argv)
    if a.workers < 1:
        p.error("--workers must be at least 1")
    return NodeOptions(
        a.name, a.http, a.https, a.admin, a.control_plane, _token(a), a.cache_dir,
        _networks(p, a.trusted_proxies), a.access_log, a.snapshot, workers=a.workers,
        worker_cpu_affinity=a.worker_cpu_affinity,
        default_certificate=a.default_certificate_name, max_connections=a.max_connections,
        header_timeout=a.header_timeout, body_idle_timeout=a.body_idle_timeout,
        keepalive_timeout=a.keepalive_timeout, worker_fd=a.worker_fd,
        stats_seconds=a.stats_seconds)


def require_c_parser() -> None:
    """The node refuses to start without the llhttp C extension."""
    import httptools
    from httptools.parser import parser as cparser
    ok = (getattr(cparser, "__file__", "") or "").endswith((".so", ".pyd"))
    if not ok or httptools.HttpRequestParser is not cparser.HttpRequestParser:
        raise SystemExit("switchyard: httptools is not the C (llhttp) extension; refusing to start")


class Node(Runtime):
    def __init__(self, opts: NodeOptions):
        from dataplane.accesslog import AccessLog
        from dataplane.diagnostics import HUB
        super().__init__(opts)
        self.log = AccessLog(opts.access_log, opts.name)
        HUB.node = opts.name
        self.servers: list[asyncio.AbstractServer] = []
        self.proxies: list[Any] = []
        self.link = None  # a worker's link to its supervisor
        self._link_task: asyncio.Task | None = None
        self._ticker: asyncio.Task | None = None

    async def start(self) -> None:
        await self.load_config()
        http, https = await self.listen()
        if self.link is not None:
            await self.link.ready()
            self._link_task = asyncio.ensure_future(self.link.run())
            self.reserve(http, https, self.opts.admin)
        else:
            admin = await self.start_admin()
            self.announce(http, https, admin)
            self.reserve(http, https, admin)
            self.start_sync({"http": http, "https": https})
        self._ticker = asyncio.ensure_future(self.tick())
        self.handle_signals()

    async def load_config(self) -> None:
        """A worker gets its config from the supervisor; a node loads its own."""
        if self.opts.worker_fd < 0:
            await self.load_initial()
            return
        from dataplane.workers import WorkerLink
        self.link = WorkerLink(self.opts.worker_fd, self.state, self.stopping.set)
        await self.link.initial()

    async def listen(self) -> tuple[str, str]:
        """Serve HTTP and, unless off, HTTPS; returns their addresses ("" when off)."""
        from dataplane import tls
        from dataplane.forwarder import ProxyServer
        opts = self.opts
        tls_sock, https = bind_reuseport(opts.https) if opts.https_enabled else (None, "")
        sock, http = bind_reuseport(opts.http)
        https_port = tls_sock.getsockname()[1] if tls_sock is not None else 443
        await self.serve(sock, ProxyServer(self.state, self.log, sock.getsockname()[1],
                                           opts.trusted_proxies, https_port=https_port))
        if tls_sock is not None:
            await self.serve(tls_sock, ProxyServer(self.state, self.log, https_port,
                                                   opts.trusted_proxies, scheme=b"https"),
                             ssl=tls.listener_context(self.state),
                             ssl_handshake_timeout=tls.HANDSHAKE_TIMEOUT)
        return http, https

    async def serve(self, sock: socket.socket, proxy: Any, **tls_args: Any) -> None:
        opts = self.opts
        proxy.header_timeout = opts.header_timeout
        proxy.body_idle_timeout = opts.body_idle_timeout
        proxy.keepalive_timeout = opts.keepalive_timeout
        proxy.max_connections = opts.max_connections
        self.proxies.append(proxy)
        loop = asyncio.get_running_loop()
        self.servers.append(await loop.create_server(proxy, sock=sock, backlog=4096, **tls_args))

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
        for s in self.servers:
            s.close()
        await self.drain()
        await self.stop_sync()
        self._ticker.cancel()
        self.state.upstreams.close()
        await self.stop_admin()
        self.log.close()

    async def drain(self) -> None:
        loop = asyncio.get_running_loop()
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
    opts = parse_args(args)
    require_c_parser()
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        if opts.workers > 1 and opts.worker_fd < 0:
            from dataplane.workers import Supervisor
            return runner.run(Supervisor(opts, args).run())
        return runner.run(Node(opts).run())
