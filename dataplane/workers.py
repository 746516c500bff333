"""``--workers N``: one supervisor process and N worker processes sharing the listeners.

- The **supervisor** (the process started as ``python -m dataplane``) reserves the
  listener ports (a bound, never-listening ``SO_REUSEPORT`` socket, so ``:0`` becomes
  one concrete port for everyone), starts N workers (``python -m dataplane ...
  --worker-fd FD``), and is the node's only voice to the control plane: it runs the one
  ``SyncClient`` (one WebSocket, one cache directory, one ACK per push), the admin
  listener, and ``--snapshot`` reloads on SIGHUP.
- Each **worker** binds its own ``SO_REUSEPORT`` socket on the same addresses (the kernel
  spreads connections over them), runs the data plane on uvloop when installed, and
  applies what the supervisor sends over a unix socketpair. It is told the supervisor's
  admin address and control plane only so that tenant pools never reach them.
- A config push is validated by the supervisor (the same ``NodeState.apply`` as a
  single-process node), then sent to every worker; the ACK goes out only when every
  worker has applied it, so the dashboard's applied version is true of every process.
  Upstream health is broadcast the same way.
- ``/metrics`` on the supervisor's admin listener sums the workers' counters (polled
  once a second); a target counts as healthy only if no worker has it ejected.
- ``SIGTERM`` to the supervisor: every worker stops accepting and drains (60 s), then
  the supervisor exits. A worker that dies is restarted with the current config.

Messages are length-prefixed JSON objects in both directions.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import sys
from typing import Any, Sequence

from dataplane import schema
from dataplane.diagnostics import DRAIN_SECONDS as DIAG_SECONDS, HUB
from dataplane.metrics import RouteStats
from dataplane.ratelimit import WorkerShares
from dataplane.ondemand import UNKNOWN as UNKNOWN_SNI
from dataplane.runtime import DRAIN_SECONDS, NodeOptions, Runtime, bind_reuseport, say

FRAME = struct.Struct("!I")
STATS_SECONDS = 1.0


async def send_msg(writer: asyncio.StreamWriter, msg: dict) -> None:
    data = json.dumps(msg, separators=(",", ":")).encode()
    writer.write(FRAME.pack(len(data)) + data)
    await writer.drain()


async def recv_msg(reader: asyncio.StreamReader) -> dict:
    (n,) = FRAME.unpack(await reader.readexactly(FRAME.size))
    return json.loads(await reader.readexactly(n))


# ---------------------------------------------------------------- worker side

def collect_stats(state: Any) -> dict:
    m = state.metrics
    routes = []
    for s in list(m.routes.values()):
        routes.append({
            "name": s.name, "route_id": s.route_id,
            "requests": [[cls, ps, n] for (cls, ps), n in s.requests.items()],
            "duration": [s.duration.counts, s.duration.sum],
            "upstream": [s.upstream.counts, s.upstream.sum],
            "bytes_in": s.bytes_in, "bytes_out": s.bytes_out,
        })
    return {"pid": os.getpid(), "routes": routes, "active": m.active_connections,
            "health": [list(row) for row in m.target_health()],
            "ejections": state.ejections(), "failing": state.outlier.failing(),
            "version": state.version,
            "unknown_sni": UNKNOWN_SNI.take()}  # on-demand TLS: the supervisor reports them


class WorkerLink:
    """A worker's end of the supervisor socketpair."""

    def __init__(self, fd: int, state: Any, on_parent_gone: Any):
        self.sock = socket.socket(fileno=fd)
        self.state = state
        self.on_parent_gone = on_parent_gone
        self._diag_task = None

    async def initial(self) -> None:
        """Receive and apply the supervisor's current config before listening."""
        self.reader, self.writer = await asyncio.open_unix_connection(sock=self.sock)
        await self.handle(await recv_msg(self.reader))

    async def ready(self, **info: Any) -> None:
        await send_msg(self.writer, {"type": "ready", "pid": os.getpid(), **info})

    async def run(self) -> None:
        try:
            while True:
                await self.handle(await recv_msg(self.reader))
        except (asyncio.IncompleteReadError, ConnectionError):
            self.on_parent_gone()  # the supervisor is gone: drain and exit

    async def handle(self, msg: dict) -> None:
        kind = msg.get("type")
        if kind == "apply":
            try:
                ms = self.state.apply(msg["version"], msg["hash"], msg["snapshot"])
                reply = {"ok": True, "ms": ms}
            except schema.SnapshotInvalid as exc:
                reply = {"ok": False, "errors": [e.as_dict() for e in exc.errors]}
            await send_msg(self.writer, {"type": "applied", "id": msg.get("id"), **reply})
        elif kind == "health":
            self.state.set_health(msg["targets"])
        elif kind == "stats":
            await send_msg(self.writer, {"type": "stats", "id": msg.get("id"),
                                         "stats": collect_stats(self.state)})
        elif kind == "rl.report":  # rate limits (dataplane.ratelimit.WorkerShares): tick and report
            await send_msg(self.writer, {"type": "rl.report", "id": msg.get("id"),
                                         "report": self.state.ratelimits.report()})
        elif kind == "rl.shares":
            try:
                self.state.ratelimits.apply_shares(msg.get("msg"))
            except schema.RateLimitMessageInvalid:
                pass
        elif kind == "diag.cmd":  # tail / capture commands relayed by the supervisor
            HUB.command(msg.get("msg") or {})
            if self._diag_task is None:
                self._diag_task = asyncio.ensure_future(self.diag_loop())

    async def diag_loop(self) -> None:
        """Send this worker's tail lines and capture records to the supervisor."""
        while True:
            await asyncio.sleep(DIAG_SECONDS)
            out = HUB.drain()
            if out:
                try:
                    await send_msg(self.writer, {"type": "diag.out", "messages": out})
                except (ConnectionError, RuntimeError):
                    return


# ---------------------------------------------------------------- supervisor side

class Worker:
    def __init__(self, index: int):
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.pending: dict[int, asyncio.Future] = {}
        self.ready = asyncio.get_running_loop().create_future()
        self.stats: dict | None = None
        self.reader_task: asyncio.Task | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class Fanout:
    """What the SyncClient sees as the node state (duck-typed, see sync.py): validates
    with the supervisor's own NodeState, then applies on every worker."""

    def __init__(self, sup: "Supervisor"):
        self.sup = sup

    @property
    def version(self):
        return self.sup.state.version

    @property
    def hash(self):
        return self.sup.state.hash

    @property
    def ready(self):
        return self.sup.state.ready

    def apply(self, version: int, digest: str, snapshot: dict):
        ms = self.sup.state.apply(version, digest, snapshot)  # raises SnapshotInvalid
        self.sup.current_config = {"type": "apply", "version": version, "hash": digest,
                            "snapshot": snapshot}
        return self.sup.broadcast_apply(ms)

    def set_health(self, targets: dict) -> None:
        self.sup.state.set_health(targets)
        self.sup.health.update({str(k): bool(v) for k, v in targets.items()})
        self.sup.broadcast({"type": "health", "targets": {str(k): bool(v)
                                                          for k, v in targets.items()}})

    def ejections(self) -> list[dict]:
        return self.sup.ejections()

    @property
    def metrics(self):  # summed over the workers (poll_stats)
        return self.sup.state.metrics

    @property
    def outlier(self):  # .current(): ejections across the workers
        return self.sup

    @property
    def ratelimits(self):  # the workers' rate-limit reports summed, shares split over them
        return self.sup.ratelimits


def pin_worker(pid: int, index: int) -> None:
    """``--worker-cpu-affinity auto`` (nginx's ``worker_cpu_affinity auto``): worker N
    runs on the Nth CPU the supervisor may use, round robin when workers outnumber CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    try:
        os.sched_setaffinity(pid, {cpus[index % len(cpus)]})
    except OSError as exc:  # the worker already exited: its restart pins again
        print(f"switchyard: cannot pin worker {pid}: {exc}", file=sys.stderr)


class Supervisor(Runtime):
    def __init__(self, opts: NodeOptions, argv: Sequence[str]):
        super().__init__(opts)
        self.argv = list(argv)
        self.fanout = Fanout(self)
        self.config = self.fanout
        self.current_config: dict = {"type": "none"}
        self.health: dict[str, bool] = {}
        self.workers: list[Worker] = []
        self.reserved: list[socket.socket] = []
        self.http = self.https = self.admin = ""
        self.seq = 0
        self.lock = asyncio.Lock()
        self.ratelimits = WorkerShares(self.rl_ask, self.rl_tell)

    async def rl_ask(self) -> list:
        """Every worker's rate-limit report (None from one that cannot answer in time)."""
        async def one(w: Worker):
            try:
                return str(w.index), (await self.request(w, {"type": "rl.report"}, 1.0)).get("report")
            except Exception:  # noqa: BLE001 - a worker that cannot answer reports nothing
                return str(w.index), None
        return list(await asyncio.gather(*(one(w) for w in list(self.workers))))

    def rl_tell(self, key: str, shares: dict) -> None:
        for w in self.workers:
            if str(w.index) == key:
                asyncio.ensure_future(self._send_quiet(w, {"type": "rl.shares", "msg": shares}))

    # ---- ports
    def reserve_port(self, addr: str) -> str:
        """Bind ``addr`` without listening (no connection ever queues here), so port 0
        becomes one concrete port the workers bind too."""
        sock, bound = bind_reuseport(addr)
        self.reserved.append(sock)
        return bound

    # ---- workers
    async def spawn(self, index: int) -> Worker:
        w = Worker(index)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        args = [sys.executable, "-m", "dataplane", *self.argv,
                "--http", self.http, "--https", self.https, "--admin", self.admin,
                "--workers", "1", "--worker-fd", str(child.fileno()), "--snapshot", ""]
        w.proc = await asyncio.create_subprocess_exec(*args, pass_fds=(child.fileno(),))
        child.close()
        if self.opts.worker_cpu_affinity == "auto":
            pin_worker(w.proc.pid, index)
        w.reader, w.writer = await asyncio.open_unix_connection(sock=parent)
        await send_msg(w.writer, {**self.current_config, "id": 0})
        if self.health:
            await send_msg(w.writer, {"type": "health", "targets": self.health})
        w.reader_task = asyncio.ensure_future(self.read_worker(w))
        return w

    async def read_worker(self, w: Worker) -> None:
        try:
            while True:
                msg = await recv_msg(w.reader)
                kind = msg.get("type")
                if kind == "ready":
                    if not w.ready.done():
                        w.ready.set_result(msg)
                elif kind == "diag.out":
                    if self.sync is not None:
                        self.sync.diagnostics.ingest(msg.get("messages"))
                elif kind in ("applied", "stats", "rl.report"):
                    fut = w.pending.pop(msg.get("id"), None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        for fut in w.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"worker {w.pid} is gone"))
        if not w.ready.done():
            w.ready.set_exception(ConnectionError(f"worker {w.pid} exited before serving"))

    async def request(self, w: Worker, msg: dict, timeout: float) -> dict:
        self.seq += 1
        fut = asyncio.get_running_loop().create_future()
        w.pending[self.seq] = fut
        await send_msg(w.writer, {**msg, "id": self.seq})
        return await asyncio.wait_for(fut, timeout)

    async def broadcast_apply(self, parent_ms: float) -> float:
        msg = self.current_config
        async with self.lock:
            results = await asyncio.gather(
                *(self.request(w, msg, 60.0) for w in self.workers), return_exceptions=True)
        errors = []
        ms = parent_ms
        for w, r in zip(self.workers, results):
            if isinstance(r, BaseException):
                errors.append(schema.SchemaError("workers", f"worker {w.pid}: {r!r}"))
            elif not r.get("ok"):
                errors += [schema.SchemaError(e["path"], f"worker {w.pid}: {e['message']}")
                           for e in r.get("errors", [])]
            else:
                ms = max(ms, r.get("ms", 0.0))
        if errors:
            raise schema.SnapshotInvalid(errors)
        return ms

    def applied_where(self) -> str:
        return f" on {len(self.workers)} workers" if self.workers else ""

    def broadcast(self, msg: dict) -> None:
        for w in self.workers:
            asyncio.ensure_future(self._send_quiet(w, msg))

    def relay_diagnostics(self, command: dict) -> None:
        """Tails and captures run where the traffic is: in every worker."""
        self.broadcast({"type": "diag.cmd", "msg": command})

    @staticmethod
    async def _send_quiet(w: Worker, msg: dict) -> None:
        try:
            await send_msg(w.writer, msg)
        except (ConnectionError, RuntimeError):
            pass

    async def watch(self, w: Worker) -> None:
        """Restart a worker that dies while the node is running."""
        code = await w.proc.wait()
        if self.stopping.is_set():
            return
        say(f"worker {w.pid} exited with {code}; restarting")
        new = await self.spawn(w.index)
        self.workers[w.index] = new
        try:
            await asyncio.wait_for(asyncio.shield(new.ready), 30)
        except (asyncio.TimeoutError, ConnectionError) as exc:
            say(f"restarted worker failed: {exc}")
        asyncio.ensure_future(self.watch(new))

    # ---- metrics
    async def poll_stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_SECONDS)
            for w in list(self.workers):
                try:
                    w.stats = (await self.request(w, {"type": "stats"}, 5.0))["stats"]
                    UNKNOWN_SNI.add(w.stats.get("unknown_sni"))
                except Exception:  # noqa: BLE001 - a worker that cannot answer counts as none
                    w.stats = None
            self.merge_stats()

    def merge_stats(self) -> None:
        m = self.state.metrics
        routes: dict = {}
        health: dict[tuple[str, str], bool] = {}
        for st in (w.stats for w in self.workers):
            if not st:
                continue
            for r in st["routes"]:
                _add_route_stats(routes, r)
            for pool, target, ok in st["health"]:
                health[(pool, target)] = health.get((pool, target), True) and bool(ok)
        if routes:  # cumulative per worker: the sums replace the previous sums
            m.routes.clear()
            m.routes.update(routes)
        m.active_connections = sum(w.stats["active"] for w in self.workers if w.stats)
        m.report_health([(p, t, ok) for (p, t), ok in health.items()])

    def ejections(self) -> list[dict]:
        """Targets ejected by any worker (the longest remaining ejection per target)."""
        best: dict = {}
        for w in self.workers:
            for e in (w.stats or {}).get("ejections", []):
                old = best.get(e["target"])
                if old is None or e["remaining_seconds"] > old["remaining_seconds"]:
                    best[e["target"]] = {**e, "worker": w.pid}
        return list(best.values())

    def current(self) -> list[dict]:  # the outlier detector's reporting API (outlier.py)
        return self.ejections()

    def failing(self) -> list[dict]:
        """Runs of connect failures seen by any worker (the longest run per target)."""
        best: dict = {}
        for w in self.workers:
            for e in (w.stats or {}).get("failing", []):
                old = best.get(e["target"])
                if old is None or e["count"] > old["count"]:
                    best[e["target"]] = e
        return list(best.values())

    # ---- lifecycle
    async def run(self) -> int:
        self.handle_signals()
        self.http = self.reserve_port(self.opts.http)
        self.https = self.reserve_port(self.opts.https) if self.opts.https_enabled else ""
        await self.load_initial()
        self.admin = await self.start_admin()  # first: workers reserve its address too
        pids = await self.start_workers()
        if pids is None:
            await self.stop()
            return 1
        watchers = [asyncio.ensure_future(self.watch(w)) for w in self.workers]
        self.announce(self.http, self.https, self.admin,
                      f" workers={self.opts.workers} pids={pids}")
        self.reserve(self.http, self.https, self.admin)
        self.start_sync({"http": self.http, "https": self.https}, self.relay_diagnostics)
        stats = asyncio.ensure_future(self.poll_stats())
        await self.stopping.wait()
        stats.cancel()
        for t in watchers:
            t.cancel()
        await self.stop()
        return 0

    async def start_workers(self) -> str | None:
        """Start the workers and wait until each serves; their pids, or None on failure."""
        self.workers = [await self.spawn(i) for i in range(self.opts.workers)]
        try:
            infos = await asyncio.wait_for(asyncio.gather(*(w.ready for w in self.workers)), 60)
        except (asyncio.TimeoutError, ConnectionError) as exc:
            say(f"workers failed to start: {exc}")
            return None
        return ",".join(str(i["pid"]) for i in infos)

    async def stop(self) -> None:
        """SIGTERM every worker (each stops accepting and drains), wait, then clean up."""
        self.stopping.set()
        await self.stop_sync()
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None:
                w.proc.send_signal(signal.SIGTERM)
        procs = [w.proc.wait() for w in self.workers if w.proc is not None]
        try:
            await asyncio.wait_for(asyncio.gather(*procs), DRAIN_SECONDS + 10)
        except asyncio.TimeoutError:
            for w in self.workers:
                if w.proc is not None and w.proc.returncode is None:
                    w.proc.kill()
        for w in self.workers:
            if w.writer is not None:
                w.writer.close()
        await self.stop_admin()
        for s in self.reserved:
            s.close()


def _add_route_stats(routes: dict, r: dict) -> None:
    """Add one worker's counters of a route (``collect_stats``) to ``routes``."""
    name, rid = r["name"], r["route_id"]
    key = name if rid is None else (rid, name)
    rs = routes.get(key)
    if rs is None:
        rs = routes[key] = RouteStats(name, rid)
    rs.bytes_in += r["bytes_in"]
    rs.bytes_out += r["bytes_out"]
    for cls, ps, n in r["requests"]:
        rs.requests[(cls, ps)] = rs.requests.get((cls, ps), 0) + n
    for hist, (counts, total) in ((rs.duration, r["duration"]), (rs.upstream, r["upstream"])):
        hist.counts = [a + b for a, b in zip(hist.counts, counts)]
        hist.sum += total
