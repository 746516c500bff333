"""Soak: a real node process under a steady GET/POST/WebSocket mix while its config changes
every second and targets are added, drained, disabled and killed.

Bounded: SWITCHYARD_SOAK_SECONDS of traffic (default 60), SWITCHYARD_SOAK_WORKERS node
workers (default 2: the supervisor fans every apply out to both). Runs in ``make test``.

What "zero requests lost that could have been served" means here, precisely:

- every request either succeeded (200, body verified: GET names its upstream, POST echoes
  the length and SHA-256 of what was sent, WebSocket echoes every message and closes 1000),
- or it is *excused*, which needs all of: the access-log line of its request id (we send
  our own X-Request-ID) names the **killed** target as its upstream; the client got a
  proxy-generated 502 whose Proxy-Status type is the one logged, or the connection was
  aborted and the log says ``http_response_incomplete``; and it falls in the detection
  window: it started before the config without the killed target was applied (and
  ``connection_terminated``/``http_response_incomplete`` ones, which were written before
  the target died, started before the process was reaped). Allowed types: GET (and WS
  handshakes) only ``connection_terminated``/``http_response_incomplete`` (a GET that
  was never written must be retried on another target, so ``connection_refused`` is a
  loss); POST also ``connection_refused`` (only idempotent requests are
  retried). WebSocket sessions that were open on the killed target are counted as cut.
- nothing else: no failure of any kind against the drained, disabled or added targets,
  or during the per-second applies.

Resources: the node's open file descriptors are classified (/proc/<pid>/fd joined with
/proc/<pid>/net/tcp*) at a quiet point after warm-up and again at the end: no client
connection left, no connection to a dead or removed target, everything that is not an
upstream keep-alive connection unchanged (±2), and RSS growth bounded.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.dataplane.helpers import ROOT, Client, NodeProcess

SOAK_SECONDS = float(os.environ.get("SWITCHYARD_SOAK_SECONDS", "60"))
WORKERS = int(os.environ.get("SWITCHYARD_SOAK_WORKERS", "2"))
GET_TASKS, POST_TASKS, WS_TASKS = 6, 3, 3
RSS_GROWTH_KB = 24 * 1024   # per process, whatever the duration
FD_SLACK = 2

pytestmark = [pytest.mark.soak, pytest.mark.timeout(SOAK_SECONDS + 240)]

UPSTREAM_SCRIPT = Path(__file__).with_name("soak_upstream.py")
BLOB = random.Random(7).randbytes(512 * 1024)


# ---------------------------------------------------------------- upstream processes

class Upstream:
    def __init__(self, name: str):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, str(UPSTREAM_SCRIPT), name], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()  # "PORT n" (aiohttp imports take < 5 s)
        assert line.startswith("PORT "), f"upstream {name} did not start: {line!r}"
        self.port = int(line.split()[1])
        self.addr = f"127.0.0.1:{self.port}"

    def kill(self) -> float:
        """SIGKILL, wait until reaped; returns the time the process was gone."""
        self.proc.kill()
        self.proc.wait(10)
        return time.time()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------- config source

class Config:
    """Writes a new snapshot version and SIGHUPs the node; knows when each applied."""

    def __init__(self, node: NodeProcess, path: Path):
        self.node = node
        self.path = path
        self.version = 1
        self.targets: dict[int, tuple[Upstream, str]] = {}  # id -> (upstream, state)
        self.applied: dict[int, float] = {}   # version -> time its apply line appeared
        self.pushed: dict[int, float] = {}    # version -> time of its SIGHUP
        self._seen = 0

    def snapshot(self) -> dict:
        v = self.version
        targets = [{"id": tid, "host": "127.0.0.1", "port": up.port, "weight": 1,
                    "state": state} for tid, (up, state) in sorted(self.targets.items())]
        gen = [{"name": "X-Gen", "value": str(v)}]
        routes = [{"id": 1, "name": "app", "tenant": None, "hosts": ["app.test"], "pool": 1,
                   "websocket": True, "response_headers": {"set": gen}}]
        for k in range(max(1, v - 4), v + 1):  # routes come and go, one new per version
            routes.append({"id": 100 + k, "name": f"r{k}", "tenant": None,
                           "hosts": [f"r{k}.test"], "pool": 1,
                           "response_headers": {"set": gen}})
        return {"version": v, "snapshot": {
            "schema": 1, "certificates": [], "routes": routes,
            "pools": [{"id": 1, "name": "main", "tenant": None, "targets": targets,
                       # the algorithm changes with every version too
                       "algorithm": "round_robin" if v % 2 else "least_conn",
                       "read_timeout": 15, "retries": 1}]}}

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot()))
        os.replace(tmp, self.path)

    def push(self) -> int:
        self.version += 1
        self.write()
        self.pushed[self.version] = time.time()
        self.node.proc.send_signal(signal.SIGHUP)
        return self.version

    def poll(self) -> None:
        text = self.node.stderr()
        for m in re.finditer(r"applied \S+ version (\d+) ", text[self._seen:]):
            self.applied.setdefault(int(m.group(1)), time.time())
        self._seen = len(text) - 200 if len(text) > 200 else 0
        assert "rejected" not in text, text[-2000:]

    async def watch(self) -> None:
        """Note apply times as they happen (an upper bound, 20 ms late at most)."""
        while True:
            self.poll()
            await asyncio.sleep(0.02)

    async def wait_applied(self, v: int, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while v not in self.applied:
            self.poll()
            assert time.monotonic() < deadline, f"version {v} never applied: {self.node.stderr()[-2000:]}"
            await asyncio.sleep(0.02)
        return self.applied[v]


# ---------------------------------------------------------------- node resources

def _tcp_table() -> dict[int, tuple[int, int, str]]:
    """socket inode -> (local port, remote port, state hex) for loopback TCP sockets."""
    out = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            out[int(f[9])] = (int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16), f[3])
    return out


def fd_census(pid: int, node_port: int, upstream_ports: set[int]) -> Counter:
    table = _tcp_table()
    c: Counter = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", link)
        entry = table.get(int(m.group(1))) if m else None
        if entry is None:
            c["other"] += 1
        elif entry[2] == "0A":
            c["listen"] += 1
        elif entry[0] == node_port:
            c["client"] += 1
            c[f"client:{entry[2]}"] += 1
            c[f"client_port:{entry[1]}"] += 1
        elif entry[1] in upstream_ports:
            c[f"upstream:{entry[1]}"] += 1
            c["upstream"] += 1
        else:
            c["other_tcp"] += 1
    return c


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- traffic

class Traffic:
    def __init__(self, port: int):
        self.port = port
        self.stop = asyncio.Event()
        self.records: list[dict] = []
        self.seq = 0

    def rid(self, kind: str) -> str:
        self.seq += 1
        return f"soak-{kind}-{self.seq}"

    def record(self, kind, rid, t0, ok, status=0, proxy_status=None, upstream=None, error="",
               lport=None):
        self.records.append({"lport": lport, "kind": kind, "rid": rid, "t0": t0, "t1": time.time(), "ok": ok,
                             "status": status, "proxy_status": proxy_status,
                             "upstream": upstream, "error": error})

    @staticmethod
    def proxy_status(res) -> str | None:
        ps = res.one("Proxy-Status")
        m = re.match(r"switchyard; error=([a-z_]+);", ps or "")
        return m.group(1) if m else None

    async def get_loop(self, rnd: random.Random) -> None:
        c = None
        n = 0
        while not self.stop.is_set():
            slow = rnd.random() < 0.1
            path = f"/slow?ms={rnd.randint(50, 400)}" if slow else "/g"
            rid = self.rid("get")
            t0 = time.time()
            try:
                if c is None:
                    c = await Client(self.port).connect()
                res = await c.request("GET", path, host="app.test",
                                      headers=[("X-Request-ID", rid)])
            except (ConnectionError, TimeoutError, OSError) as exc:
                self.record("get", rid, t0, False, error=type(exc).__name__)
                if c is not None:
                    c.close()
                c = None
                continue
            up = res.one("X-Upstream")
            ok = res.status == 200 and up is not None and res.body == up.encode()
            self.record("get", rid, t0, ok, res.status, self.proxy_status(res), up,
                        lport=c.w.get_extra_info("sockname")[1])
            n += 1
            if res.one("Connection") == "close" or n % 25 == 0:  # new connections too
                c.close()
                c = None
            await asyncio.sleep(0.003)
        if c is not None:
            c.close()

    async def post_loop(self, rnd: random.Random) -> None:
        c = None
        while not self.stop.is_set():
            size = rnd.choice((0, 10, 1000, 16384, 100_000, 400_000))
            off = rnd.randrange(0, len(BLOB) - size + 1)
            body = BLOB[off:off + size]
            chunked = size > 0 and rnd.random() < 0.3
            rid = self.rid("post")
            t0 = time.time()
            try:
                if c is None:
                    c = await Client(self.port).connect()
                if chunked:
                    half = size // 2
                    await c.send(b"POST /p HTTP/1.1\r\nHost: app.test\r\nX-Request-ID: "
                                 + rid.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 + b"%x\r\n%b\r\n" % (half, body[:half]))
                    await asyncio.sleep(0.002)
                    rest = body[half:]
                    await c.send(b"%x\r\n%b\r\n0\r\n\r\n" % (len(rest), rest) if rest
                                 else b"0\r\n\r\n")
                    res = await c.response()
                else:
                    res = await c.request("POST", "/p", host="app.test",
                                          headers=[("X-Request-ID", rid)], body=body)
            except (ConnectionError, TimeoutError, OSError) as exc:
                self.record("post", rid, t0, False, error=type(exc).__name__)
                if c is not None:
                    c.close()
                c = None
                continue
            up = res.one("X-Upstream")
            want = f"{size} {hashlib.sha256(body).hexdigest()}".encode()
            ok = res.status == 200 and res.body == want
            self.record("post", rid, t0, ok, res.status, self.proxy_status(res), up,
                        "" if ok or res.status != 200 else "body mismatch",
                        lport=c.w.get_extra_info("sockname")[1])
            if res.one("Connection") == "close" or res.status != 200:
                c.close()
                c = None
            await asyncio.sleep(0.005)
        if c is not None:
            c.close()

    async def ws_loop(self, rnd: random.Random) -> None:
        url = f"http://127.0.0.1:{self.port}/ws"
        while not self.stop.is_set():
            rid = self.rid("ws")
            t0 = time.time()
            # force_close: aiohttp never reuses (and so never silently retries) a connection
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(force_close=True)) as session:
                up = lport = None
                try:
                    async with session.ws_connect(url, headers={"Host": "app.test",
                                                                "X-Request-ID": rid},
                                                  autoping=True, heartbeat=None,
                                                  max_msg_size=0) as ws:
                        lport = (ws.get_extra_info("sockname") or (0, 0))[1]
                        hello = await ws.receive(timeout=10)
                        assert hello.type == aiohttp.WSMsgType.TEXT, hello
                        up = hello.data.split()[1]
                        for i in range(rnd.randint(3, 15)):
                            if i % 3 == 2:
                                data = BLOB[i * 100:i * 100 + rnd.randint(1, 70000)]
                                await ws.send_bytes(data)
                            else:
                                data = f"{rid} message {i}"
                                await ws.send_str(data)
                            msg = await ws.receive(timeout=10)
                            if msg.data != data:
                                raise ConnectionError(f"ws echo broken: {msg.type} {msg.extra}")
                            await asyncio.sleep(rnd.uniform(0.01, 0.15))
                        await ws.close()
                        if ws.close_code != 1000:
                            raise ConnectionError(f"close code {ws.close_code}")
                    self.record("ws", rid, t0, True, 101, None, up, lport=lport)
                except aiohttp.WSServerHandshakeError as exc:
                    ps = re.match(r"switchyard; error=([a-z_]+);",
                                  (exc.headers or {}).get("Proxy-Status", ""))
                    self.record("ws", rid, t0, False, exc.status, ps.group(1) if ps else None,
                                None, "handshake")
                except (ConnectionError, asyncio.TimeoutError, aiohttp.ClientError,
                        AssertionError, OSError) as exc:
                    self.record("ws", rid, t0, False, 101 if up else 0, None, up,
                                f"cut: {type(exc).__name__}: {exc}", lport=lport)
            await asyncio.sleep(0.01)

    async def run_for(self, seconds: float | None, seed: int) -> list[asyncio.Task]:
        self.stop.clear()
        rnd = random.Random(seed)
        tasks = ([asyncio.ensure_future(self.get_loop(random.Random(rnd.random())))
                  for _ in range(GET_TASKS)]
                 + [asyncio.ensure_future(self.post_loop(random.Random(rnd.random())))
                    for _ in range(POST_TASKS)]
                 + [asyncio.ensure_future(self.ws_loop(random.Random(rnd.random())))
                    for _ in range(WS_TASKS)])
        if seconds is not None:
            await asyncio.sleep(seconds)
            await self.finish(tasks)
        return tasks

    async def finish(self, tasks: list[asyncio.Task]) -> None:
        self.stop.set()
        done, pending = await asyncio.wait(tasks, timeout=30)
        assert not pending, "traffic tasks did not stop"
        for t in done:
            t.result()


# ---------------------------------------------------------------- the soak

def read_log(path: Path) -> dict[str, dict]:
    out = {}
    for line in path.read_text().splitlines():
        d = json.loads(line)
        out[d["request_id"]] = d
    return out


def log_start(d: dict) -> float:
    import datetime
    t = datetime.datetime.strptime(d["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp() - d["duration"]


async def test_soak_mixed_traffic_with_config_churn_and_target_failures(tmp_path):
    ups = {name: Upstream(name) for name in ("u1", "u2", "u3")}
    extra: list[Upstream] = []
    node = None
    try:
        snap_path = tmp_path / "snapshot.json"
        boot = {tid: (ups[n], "enabled") for tid, n in ((1, "u1"), (2, "u2"), (3, "u3"))}
        node = NodeProcess(tmp_path, {"schema": 1, "pools": [], "routes": [],
                                      "certificates": []}, "--workers", str(WORKERS))
        await node.ready(timeout=30)
        cfg = Config(node, snap_path)
        cfg.targets = dict(boot)
        await cfg.wait_applied(cfg.push())
        err = node.stderr()
        pids = ([int(p) for p in err.split("pids=")[1].split()[0].split(",")]
                if WORKERS > 1 else [node.proc.pid])
        watched = pids + ([node.proc.pid] if WORKERS > 1 else [])

        traffic = Traffic(node.port)
        await traffic.run_for(4.0, seed=1)  # warm-up: imports, pools, arenas
        warm = [r for r in traffic.records]
        assert all(r["ok"] for r in warm), [r for r in warm if not r["ok"]][:5]

        async def quiet_census() -> tuple[dict, dict]:
            await asyncio.sleep(1.5)  # client connections closed by then, sweeps ran
            ports = {u.port for u in (*ups.values(), *extra)}
            return ({p: fd_census(p, node.port, ports) for p in watched},
                    {p: rss_kb(p) for p in watched})
        fds_before, rss_before = await quiet_census()
        traffic.records.clear()

        # ------------------------------------------------------------ the soak proper
        D = SOAK_SECONDS
        events = {}
        t_start = time.time()
        tasks = await traffic.run_for(None, seed=2)
        watcher = asyncio.ensure_future(cfg.watch())
        plan = [(0.15, "add u4"), (0.30, "drain u2"), (0.30 + 3 / D, "remove u2"),
                (0.30 + 6 / D, "stop u2"), (0.50, "kill u3"), (0.50 + 3 / D, "remove u3"),
                (0.65, "add u5"), (0.78, "disable u1"), (0.88, "enable u1")]
        checks = []
        tick = 0
        while time.time() - t_start < D:
            tick += 1
            await asyncio.sleep(max(0.0, t_start + tick - time.time()))
            now = time.time() - t_start
            while plan and plan[0][0] * D <= now:
                _, what = plan.pop(0)
                verb, name = what.split()
                if verb == "add":
                    up = ups[name] = await asyncio.get_running_loop().run_in_executor(
                        None, Upstream, name)
                    extra.append(up)
                    cfg.targets[int(name[1:])] = (up, "enabled")
                elif verb in ("drain", "disable", "enable"):
                    tid = int(name[1:])
                    cfg.targets[tid] = (cfg.targets[tid][0],
                                        {"drain": "draining", "disable": "disabled",
                                         "enable": "enabled"}[verb])
                elif verb == "remove":
                    del cfg.targets[int(name[1:])]
                elif verb == "stop":
                    ups[name].stop()
                elif verb == "kill":
                    events["kill_sent"] = time.time()
                    events["dead"] = await asyncio.get_running_loop().run_in_executor(
                        None, ups[name].kill)
                if verb in ("stop", "kill"):
                    continue
                events[what] = cfg.version + 1  # the version that carries the change
            v = cfg.push()
            checks.append(v)
            cfg.poll()
            # a route added by an apply is served by every worker once the apply is logged
            done = [x for x in checks if x in cfg.applied]
            for x in done[-1:]:
                for _ in range(2 * WORKERS):
                    c = await Client(node.port).connect()
                    res = await c.request("GET", "/g", host=f"r{x}.test")
                    c.close()
                    assert res.status == 200, (x, res.status, res.body)
                    assert int(res.one("X-Gen")) >= x
            checks = [x for x in checks if x not in done]
        await traffic.finish(tasks)
        t_end = time.time()
        last = cfg.version
        await cfg.wait_applied(last)
        watcher.cancel()
        fds_after, rss_after = await quiet_census()

        # ------------------------------------------------------------ verdict
        node_log = read_log(tmp_path / "access.log")
        u3 = ups["u3"].addr
        applied = {what: cfg.applied.get(v) for what, v in events.items()
                   if isinstance(v, int) and not isinstance(v, bool)}
        assert all(applied.values()), (events, cfg.applied)
        t_removed = applied["remove u3"]
        allowed = {"get": {"connection_terminated", "http_response_incomplete"},
                   "ws": {"connection_terminated", "http_response_incomplete"},
                   "post": {"connection_refused", "connection_terminated",
                            "http_response_incomplete"}}
        by_kind = Counter(r["kind"] for r in traffic.records)
        failures: Counter = Counter()
        excused: Counter = Counter()
        lost = []
        for r in traffic.records:
            if r["ok"]:
                continue
            line = node_log.get(r["rid"])
            key = f'{r["kind"]} {r["status"]} {r["proxy_status"] or r["error"][:40]}'
            failures[key] += 1
            if r["kind"] == "ws" and r["status"] == 101:
                # an open session whose upstream died: only on the killed target
                if r["upstream"] == "u3" and r["t0"] < events["dead"]:
                    excused["ws session cut by the kill"] += 1
                    continue
                lost.append((r, line))
                continue
            ps = line and line["proxy_status"]
            written_before_death = ps in ("connection_terminated", "http_response_incomplete")
            if (line is not None and line["upstream_addr"] == u3 and ps in allowed[r["kind"]]
                    and (r["proxy_status"] == ps if r["status"] else
                         ps == "http_response_incomplete")
                    and r["t0"] < (events["dead"] if written_before_death else t_removed)):
                excused[f'{r["kind"]} {ps}'] += 1
                continue
            lost.append((r, line))

        # the drained target got nothing new once draining applied; disabled likewise
        late = []
        for what, addr in (("drain u2", ups["u2"].addr), ("disable u1", ups["u1"].addr)):
            since = applied[what]
            until = cfg.pushed[events["enable u1"]] if what == "disable u1" else None
            for d in node_log.values():
                if d["upstream_addr"] == addr and log_start(d) > since + 0.25 and (
                        until is None or log_start(d) < until - 0.25):
                    late.append((what, d))

        report = {
            "events": {k: round(v - t_start, 3) if isinstance(v, float) else v
                       for k, v in events.items()},
            "seconds": round(t_end - t_start, 1), "workers": WORKERS, "versions": last,
            "requests": dict(by_kind), "failures": dict(failures), "excused": dict(excused),
            "lost": len(lost), "lost_detail": lost[:10],
            "fds_before": {p: dict(c) for p, c in fds_before.items()},
            "fds_after": {p: dict(c) for p, c in fds_after.items()},
            "rss_kb_before": rss_before, "rss_kb_after": rss_after,
            "by_upstream": dict(Counter(d["upstream_addr"] for d in node_log.values())),
        }
        print("SOAK REPORT " + json.dumps(report))
        (tmp_path / "soak-report.json").write_text(json.dumps(report, indent=1))
        if os.environ.get("SWITCHYARD_SOAK_REPORT"):
            Path(os.environ["SWITCHYARD_SOAK_REPORT"]).write_text(json.dumps(report, indent=1))

        assert not lost, json.dumps(lost[:10], indent=1)
        assert not late, late[:5]
        assert min(by_kind.values()) > 0 and by_kind["get"] > 50 * SOAK_SECONDS / 60
        # the detection window is short: passive ejection (5 failures) or removal ends it
        assert sum(excused.values()) <= WORKERS * (5 + GET_TASKS + POST_TASKS + WS_TASKS), excused
        # every worker still the one that started: nothing crashed and was restarted
        if WORKERS > 1:
            assert f"pids={','.join(map(str, pids))}" in node.stderr()
            assert "restarting" not in node.stderr()
        for p in watched:
            b, a = fds_before[p], fds_after[p]
            if a["client"]:  # a leak, or just slow? look again
                time.sleep(5)
                again = fd_census(p, node.port, set())
                ports = {int(k.split(":")[1]) for k in a if k.startswith("client_port:")}
                who = [r for r in traffic.records if r["lport"] in ports]
                raise AssertionError(f"client connections left in {p}: {a} 5 s later: {again}"
                                     f" requests on them: {who[-5:]}")
            dead = {ups["u2"].port, ups["u3"].port}
            assert not any(a[f"upstream:{port}"] for port in dead), (p, a)
            for k in ("other", "listen", "other_tcp"):
                assert a[k] <= b[k] + FD_SLACK, (p, k, b, a)
            # idle keep-alive connections: at most one per concurrent client per live target
            assert a["upstream"] <= (GET_TASKS + POST_TASKS + WS_TASKS + 4) * 3, (p, a)
            assert rss_after[p] - rss_before[p] < RSS_GROWTH_KB, (p, rss_before, rss_after)
    finally:
        if node is not None:
            node.stop()
        for up in (*ups.values(), *extra):
            up.stop()
