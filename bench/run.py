"""Switchyard benchmark harness: ``make bench`` / ``python -m bench [--quick]``.

One run starts, on loopback only, a static nginx backend, nginx and HAProxy as reverse
proxies and Switchyard (1 and 2 workers), runs the same loads against each in alternation
(round 1: direct, nginx, HAProxy, Switchyard…; round 2: the same again; …), prints every
figure with its ratio to nginx, and writes the same as JSON under ``bench/results/``.
Then the Switchyard-only figures: 10 vs 10,000 routes, snapshot compile/apply time,
change → ACK of 3 nodes (embedded and production mode), memory per idle connection and
health-check throughput. Everything it starts is stopped at the end, on Ctrl-C or error.
See bench/README.md for the method.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.support import free_port  # noqa: E402 - needs ROOT on the path

BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
PY = sys.executable
TOOLS = {"nginx": "/usr/sbin/nginx", "haproxy": "/usr/sbin/haproxy", "wrk": "/usr/bin/wrk"}
HOST = "bench.localhost"
SMALL = 128
BIG = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
_SCRUB = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "DEBUG", "DJANGO_SETTINGS_MODULE",
          "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def log(msg: str = "") -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- settings
@dataclass
class Settings:
    quick: bool = False
    rounds: int = 3
    duration: int = 10          # seconds per wrk run (wrk takes whole seconds)
    warmup: int = 2             # one warm-up run per target and load before round 1
    conns: int = 64
    big_conns: int = 16
    rate: int = 3000
    rate_conns: int = 10
    route_counts: tuple = (10, 10000)
    compile_sizes: tuple = (1000, 10000)
    compile_repeat: int = 3
    changes: int = 50
    idle_conns: int = 10000
    hc_args: tuple = ("--targets", "1000", "--procs", "2", "--pools", "10", "--interval", "5",
                      "--rounds", "3", "--mode", "both")
    sections: tuple = ("compare", "routes", "compile", "sync", "idle", "health", "profile")
    production: str = "auto"    # auto | on | off
    results: str = str(RESULTS)

    @classmethod
    def quick_settings(cls) -> "Settings":
        return cls(quick=True, rounds=1, duration=1, warmup=0, rate=500, route_counts=(10, 1000),
                   compile_sizes=(100, 1000), compile_repeat=1, changes=3, idle_conns=300,
                   hc_args=("--targets", "50", "--procs", "1", "--pools", "2", "--interval", "0.5",
                            "--rounds", "2", "--mode", "checker"),
                   production="off")


# ----------------------------------------------------------------------------- processes
def pin(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []


def wait_port(port: int, proc: "Proc", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}\n{proc.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.name}: port {port} never opened\n{proc.tail()}")


def http_get(port: int, path: str, host: str = HOST, timeout: float = 3.0) -> tuple[int, bytes]:
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (nginx workers, Switchyard workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_times(pids: list[int]) -> tuple[float, float]:
    """(utime, stime) seconds of the processes (all their threads), from /proc/PID/stat."""
    user = system = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])     # field 14 of stat(5)
            system += int(fields[12])   # field 15
        except (OSError, IndexError, ValueError):
            pass
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (all their threads)."""
    return sum(cpu_times(pids))


def rss_kib(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Proc:
    """A child in its own session (so a terminal's Ctrl-C reaches only the harness, which
    then stops it), output to a log file in the run's temp dir."""

    def __init__(self, name: str, argv: list[str], logfile: Path, env: dict | None = None,
                 cpus: str | None = None, stdin=subprocess.DEVNULL, stdout=None):
        self.name, self.logfile = name, logfile
        self.argv = pin(cpus) + argv
        out = open(logfile, "ab")
        self.popen = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdout=stdout or out, stderr=out,
                                      stdin=stdin, start_new_session=True)
        out.close()
        REGISTRY.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def pids(self) -> list[int]:
        return tree(self.pid) if self.popen.poll() is None else []

    def tail(self, n: int = 30) -> str:
        try:
            lines = self.logfile.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            lines = []
        return f"--- {self.name} ({self.logfile}):\n" + "\n".join(lines)

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)   # our own process group, by its id
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(10)
        if self in REGISTRY:
            REGISTRY.remove(self)


REGISTRY: list[Proc] = []


def stop_all() -> None:
    for p in reversed(list(REGISTRY)):
        try:
            p.stop()
        except Exception as exc:  # noqa: BLE001 - keep stopping the others
            log(f"could not stop {p.name}: {exc}")


# ----------------------------------------------------------------------------- servers
NGINX_COMMON = """worker_processes 1;
master_process off;
daemon off;
error_log {tmp}/{name}-error.log warn;
pid {tmp}/{name}.pid;
worker_rlimit_nofile {nofile};
events {{ worker_connections 16384; }}
http {{
  client_body_temp_path {tmp}/{name}-body; proxy_temp_path {tmp}/{name}-proxy;
  fastcgi_temp_path {tmp}/{name}-fcgi; uwsgi_temp_path {tmp}/{name}-uwsgi; scgi_temp_path {tmp}/{name}-scgi;
  keepalive_requests 1000000;
  keepalive_timeout 65s;
  default_type application/octet-stream;
{body}
}}
"""


@dataclass
class Target:
    name: str
    port: int
    proc: Proc | None
    kind: str                   # direct | nginx | haproxy | switchyard
    cpus: str | None
    note: str = ""
    available: bool = True
    admin_port: int = 0

    def pids(self) -> list[int]:
        return self.proc.pids() if self.proc else []


class Lab:
    """The servers of one run, in a temp dir."""

    def __init__(self, settings: Settings):
        self.s = settings
        self.tmp = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
        (self.tmp / "www").mkdir()
        (self.tmp / "www" / "small").write_bytes(b"x" * (SMALL - 1) + b"\n")
        (self.tmp / "www" / "big").write_bytes(os.urandom(BIG))
        ncpu = os.cpu_count() or 1
        self.pinned = ncpu >= 2
        self.load_cpus = "0" if self.pinned else None
        self.proxy_cpus = "1" if self.pinned else None
        self.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        self.backend: Target | None = None
        self.targets: list[Target] = []

    def nginx_conf(self, name: str, body: str) -> Path:
        path = self.tmp / f"{name}.conf"
        path.write_text(NGINX_COMMON.format(tmp=self.tmp, name=name, body=body, nofile=self.nofile))
        return path

    def start_backend(self) -> Target:
        port = free_port()
        conf = self.nginx_conf("backend", f"""  access_log off;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    root {self.tmp}/www;
    location / {{ }}
  }}""")
        p = Proc("backend nginx", [TOOLS["nginx"], "-c", str(conf), "-p", str(self.tmp)],
                 self.tmp / "backend.log", cpus=self.load_cpus)
        wait_port(port, p)
        self.backend = Target("direct", port, p, "direct", self.load_cpus)
        return self.backend

    def start_nginx(self) -> Target:
        port = free_port()
        b = self.backend.port
        conf = self.nginx_conf("nginx", f"""\
  log_format bench '$remote_addr [$time_iso8601] "$request" $status $body_bytes_sent '
                   '$request_time $upstream_addr $upstream_status $upstream_connect_time '
                   '$upstream_header_time $request_id';
  access_log {self.tmp}/nginx-access.log bench buffer=64k flush=1s;
  upstream backend {{ server 127.0.0.1:{b}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Request-ID $request_id;
      add_header X-Request-ID $request_id always;
      proxy_buffer_size 16k;
      proxy_buffers 8 16k;
      proxy_max_temp_file_size 0;
    }}
  }}""")
        p = Proc("nginx proxy", [TOOLS["nginx"], "-c", str(conf), "-p", str(self.tmp)],
                 self.tmp / "nginx.log", cpus=self.proxy_cpus)
        wait_port(port, p)
        return Target("nginx", port, p, "nginx", self.proxy_cpus,
                      "1 worker, upstream keepalive 64, access log to file (buffered)")

    def start_haproxy(self) -> Target:
        port = free_port()
        conf = self.tmp / "haproxy.cfg"
        conf.write_text(f"""global
  nbthread 1
  maxconn 9000
  log stdout format raw local0 info
defaults
  mode http
  log global
  option httplog
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  timeout http-request 10s
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  unique-id-format %{{+X}}o%ci%cp%fi%fp%Ts%rt%pid
  unique-id-header X-Request-ID
  http-response set-header X-Request-ID %[unique-id]
  default_backend be
backend be
  server s1 127.0.0.1:{self.backend.port}
""")
        p = Proc("haproxy", [TOOLS["haproxy"], "-f", str(conf), "-db"], self.tmp / "haproxy.log",
                 cpus=self.proxy_cpus)
        wait_port(port, p)
        return Target("haproxy", port, p, "haproxy", self.proxy_cpus,
                      "nbthread 1, http-reuse always, httplog to a file (stdout)")

    def snapshot(self, routes: int = 1, name: str = "snapshot") -> Path:
        from bench.cpbench import route_hosts
        rs = [{"id": 1, "name": "bench", "tenant": None, "hosts": [HOST, "127.0.0.1"], "pool": 1}]
        rs += [{"id": i + 2, "name": f"r{i}", "tenant": None, "hosts": route_hosts(i), "pool": 1}
               for i in range(max(0, routes - 1))]
        snap = {"schema": 1,
                "pools": [{"id": 1, "name": "bench", "tenant": None,
                           "targets": [{"id": 1, "host": "127.0.0.1", "port": self.backend.port}]}],
                "routes": rs}
        path = self.tmp / f"{name}.json"
        path.write_text(json.dumps(snap))
        return path

    def start_switchyard(self, name: str, workers: int = 1, routes: int = 1) -> Target:
        port, admin = free_port(), free_port()
        snap = self.snapshot(routes, f"snapshot-{name}")
        cpus = self.proxy_cpus if workers == 1 else None
        argv = [PY, "-m", "dataplane", "--name", name, "--snapshot", str(snap),
                "--http", f"127.0.0.1:{port}", "--https", f"127.0.0.1:{free_port()}",
                "--admin", f"127.0.0.1:{admin}", "--access-log", str(self.tmp / f"{name}-access.log"),
                "--cache-dir", str(self.tmp / f"{name}-cache"), "--workers", str(workers)]
        if workers > 1 and self.pinned:
            argv += ["--worker-cpu-affinity", "auto"]  # one worker per CPU
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_NODE_")}
        p = Proc(name, argv, self.tmp / f"{name}.log", env=env, cpus=cpus)
        wait_port(port, p)
        wait_port(admin, p)
        t = Target(name, port, p, "switchyard", cpus,
                   f"{workers} worker(s), --snapshot, access log to file", admin_port=admin)
        if workers > 1:
            time.sleep(1.0)
            text = (self.tmp / f"{name}.log").read_text(errors="replace")
            procs = len(p.pids())
            if procs < workers or "not supported" in text:
                t.available = False
                t.note = f"n/a: --workers {workers} not implemented (1 process running)"
                p.stop()
                t.proc = None
        return t

    def check(self, t: Target, path: str = "/small", size: int = SMALL, host: str = HOST) -> None:
        status, body = http_get(t.port, path, host=host)
        if status != 200 or len(body) != size:
            raise RuntimeError(f"{t.name}: GET {path} answered {status} with {len(body)} bytes")

    def close(self) -> None:
        stop_all()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- loads
WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\nBENCHJSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
    '"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,' ..
    '"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


def lua_script(tmp: Path, close: bool = False, hosts: list[str] | None = None, path: str = "/small") -> Path:
    lines = [f'wrk.headers["Host"] = "{HOST}"']
    if close:
        lines.append('wrk.headers["Connection"] = "close"')
    if hosts:
        lines.append("local hosts = {" + ",".join(f'"{h}"' for h in hosts) + "}")
        lines.append("local i = math.random(#hosts)")
        lines.append(f"""request = function()
  i = i + 1
  if i > #hosts then i = 1 end
  return wrk.format("GET", "{path}", {{["Host"] = hosts[i]}})
end""")
    lines.append(WRK_DONE)
    name = f"wrk-{'close' if close else 'ka'}-{len(hosts or [])}-{secrets.token_hex(3)}.lua"
    p = tmp / name
    p.write_text("\n".join(lines))
    return p


@dataclass
class Load:
    key: str
    title: str
    kind: str                   # wrk | openloop
    path: str = "/small"
    conns: int = 64
    close: bool = False
    rate: int = 0
    colocate: bool = False      # the proxy moves to the load generator's CPU for this load


def run_wrk(lab: Lab, port: int, load: Load, duration: int, script: Path | None = None) -> dict:
    script = script or lua_script(lab.tmp, close=load.close)
    argv = pin(lab.load_cpus) + [TOOLS["wrk"], "-t1", f"-c{load.conns}", f"-d{duration}s", "--timeout", "5s",
                                 "-s", str(script), f"http://127.0.0.1:{port}{load.path}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    m = re.search(r"BENCHJSON (\{.*\})", out.stdout)
    if not m:
        raise RuntimeError(f"wrk gave no result: {out.stdout[-2000:]} {out.stderr[-2000:]}")
    r = json.loads(m.group(1))
    secs = r["duration_us"] / 1e6
    r["rps"] = r["requests"] / secs if secs else 0.0
    r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    r["mib_s"] = r["bytes"] / secs / 2 ** 20 if secs else 0.0
    return r


def run_openloop(lab: Lab, port: int, load: Load, duration: float, warmup: float) -> dict:
    argv = pin(lab.load_cpus) + [PY, "-m", "bench.clients", "openloop", "--port", str(port), "--host", HOST,
                                 "--path", load.path, "--rate", str(load.rate), "--connections",
                                 str(load.conns), "--duration", str(duration), "--warmup", str(warmup)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + warmup + 60, cwd=ROOT)
    try:
        r = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"open-loop client failed: {out.stdout[-1000:]} {out.stderr[-2000:]}") from None
    r["rps"] = r["achieved_rps"]
    r["requests"] = r["total_completed"]
    return r


def threads(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            out += [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            pass
    return out


def measure(lab: Lab, t: Target, load: Load, duration: int, warmup_only: bool = False) -> dict:
    """One run of ``load`` against ``t`` with the proxy's CPU time and RSS around it."""
    if not (load.colocate and lab.pinned and t.kind != "direct"):
        return _measure(lab, t, load, duration, warmup_only)
    saved = {}
    for tid in threads(t.pids()):  # every thread to the load generator's CPU, then back
        try:
            saved[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, {int(lab.load_cpus)})
        except OSError:
            pass
    try:
        return _measure(lab, t, load, duration, warmup_only)
    finally:
        for tid, cpus in saved.items():
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass


def _measure(lab: Lab, t: Target, load: Load, duration: int, warmup_only: bool) -> dict:
    pids = t.pids()
    u0, s0 = cpu_times(pids)
    if load.kind == "wrk":
        r = run_wrk(lab, t.port, load, duration)
    else:
        secs = 0.5 if lab.s.quick else duration
        r = run_openloop(lab, t.port, load, secs, 0.0 if warmup_only or lab.s.quick else 1.0)
    u1, s1 = cpu_times(t.pids())
    r["cpu_s"] = (u1 - u0) + (s1 - s0)
    per_req = r["requests"] and t.kind != "direct"
    r["cpu_us_per_req"] = r["cpu_s"] / r["requests"] * 1e6 if per_req else None
    r["sys_us_per_req"] = (s1 - s0) / r["requests"] * 1e6 if per_req else None
    r["rss_kib"] = rss_kib(t.pids())
    return r


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict]) -> dict:
    keys = ("rps", "p50_us", "p99_us", "cpu_us_per_req", "sys_us_per_req", "mib_s")
    out = {k: med([r.get(k) for r in runs]) for k in keys}
    out["rss_kib"] = max((r.get("rss_kib") or 0) for r in runs) if runs else None
    out["errors"] = sum(r.get("errors", 0) for r in runs)
    out["rounds"] = len(runs)
    out["rps_min"] = min(r["rps"] for r in runs) if runs else None
    out["rps_max"] = max(r["rps"] for r in runs) if runs else None
    return out


def fmt_us(us) -> str:
    if us is None:
        return "-"
    if abs(us) >= 10000:
        return f"{us / 1000:.0f}ms"
    if abs(us) >= 1000:
        return f"{us / 1000:.2f}ms"
    return f"{us:.0f}us"


def fmt(v, spec="{:.0f}") -> str:
    return "-" if v is None else spec.format(v)


def print_table(load: Load, header: str, results: dict[str, dict], targets: list[Target]) -> None:
    log(f"\n== {load.title}  [{header}]")
    cols = f"{'target':<15} {'req/s':>9} {'x nginx':>8} {'p50':>8} {'p99':>8} {'+p50':>8} {'+p99':>8} " \
           f"{'CPU us/req':>10} {'of it sys':>9} {'RSS MiB':>8} {'errors':>6}"
    if load.path == "/big":
        cols += f" {'MiB/s':>7}"
    log(cols)
    direct = results.get("direct") or {}
    ngx = results.get("nginx") or {}
    for t in targets:
        r = results.get(t.name)
        if not t.available or r is None:
            log(f"{t.name:<15} {'n/a':>9}   {t.note}")
            continue
        ratio = r["rps"] / ngx["rps"] if ngx.get("rps") and t.name != "direct" else None
        add50 = r["p50_us"] - direct["p50_us"] if direct.get("p50_us") is not None and t.name != "direct" else None
        add99 = r["p99_us"] - direct["p99_us"] if direct.get("p99_us") is not None and t.name != "direct" else None
        r["ratio_to_nginx"], r["added_p50_us"], r["added_p99_us"] = ratio, add50, add99
        line = (f"{t.name:<15} {fmt(r['rps']):>9} {fmt(ratio, '{:.2f}'):>8} {fmt_us(r['p50_us']):>8} "
                f"{fmt_us(r['p99_us']):>8} {fmt_us(add50):>8} {fmt_us(add99):>8} "
                f"{fmt(r['cpu_us_per_req'], '{:.1f}'):>10} {fmt(r.get('sys_us_per_req'), '{:.1f}'):>9} "
                f"{fmt((r['rss_kib'] or 0) / 1024, '{:.1f}'):>8} "
                f"{r['errors']:>6}")
        if load.path == "/big":
            line += f" {fmt(r.get('mib_s')):>7}"
        log(line)


# ----------------------------------------------------------------------------- sections
def section_compare(lab: Lab, s: Settings, report: dict) -> None:
    targets = [lab.backend, lab.start_nginx(), lab.start_haproxy(),
               lab.start_switchyard("switchyard-1w", 1), lab.start_switchyard("switchyard-2w", 2)]
    for t in targets:
        if t.available:
            lab.check(t)
            lab.check(t, "/big", BIG)
    lab.targets = targets
    loads = [
        Load("small_keepalive", f"small {SMALL} B responses, keep-alive, {s.conns} connections", "wrk",
             conns=s.conns),
        Load("small_new_conn", f"small {SMALL} B responses, new connection per request "
                               f"(Connection: close), {s.conns} connections", "wrk", conns=s.conns, close=True),
        Load("big_1mib", f"1 MiB responses, keep-alive, {s.big_conns} connections", "wrk", path="/big",
             conns=s.big_conns),
        Load("fixed_rate", f"fixed rate {s.rate} req/s, {s.rate_conns} connections (open-loop Python "
                           "asyncio client, latency includes queueing for a connection)", "openloop",
             conns=s.rate_conns, rate=s.rate),
        Load("single_conn", "one connection, closed loop (latency added over direct)", "wrk", conns=1),
        Load("single_conn_colocated", "one connection, closed loop, the proxy moved to the load "
                                      "generator's CPU 0 for this load (no cross-CPU wake-ups)",
             "wrk", conns=1, colocate=True),
    ]
    live = [t for t in targets if t.available]
    if s.warmup:
        log(f"warm-up: {s.warmup}s of each load against each target")
        for load in loads:
            for t in live:
                measure(lab, t, load, s.warmup, warmup_only=True)
    runs: dict[str, dict[str, list]] = {load.key: {t.name: [] for t in live} for load in loads}
    for rnd in range(s.rounds):
        log(f"round {rnd + 1}/{s.rounds} ...")
        for load in loads:
            for t in live:  # the same order every round: A B C A B C ...
                r = measure(lab, t, load, s.duration)
                runs[load.key][t.name].append(r)
                log(f"   {load.key:<16} {t.name:<14} {r['rps']:>9.0f} req/s  p99 {fmt_us(r['p99_us']):>8}"
                    f"  cpu {fmt(r['cpu_us_per_req'], '{:.1f}')} us/req  errors {r['errors']}")
    header = (f"wrk -t1 {s.duration}s x {s.rounds} rounds, medians; load on CPU {lab.load_cpus}, "
              f"proxies on CPU {lab.proxy_cpus} (2 workers: one per CPU)") if lab.pinned else "unpinned (1 CPU)"
    out = {}
    for load in loads:
        res = {name: summarize(rs) for name, rs in runs[load.key].items()}
        print_table(load, header, res, targets)
        out[load.key] = {"title": load.title, "connections": load.conns, "path": load.path,
                         "results": res, "runs": runs[load.key]}
    report["compare"] = out
    report["targets"] = {t.name: {"available": t.available, "note": t.note, "cpus": t.cpus} for t in targets}
    report["two_workers"] = two_worker_ceiling(out["small_keepalive"]["results"], lab.pinned)
    report["processes"] = {t.name: process_rss(t) for t in targets
                           if t.kind == "switchyard" and t.available}
    log("\n== Switchyard processes after the loads (RSS each)")
    for name, procs in report["processes"].items():
        log(f"{name:<15} " + ", ".join(f"{p['role']} {p['rss_kib'] / 1024:.1f} MiB" for p in procs))


def two_worker_ceiling(res: dict, pinned: bool) -> dict:
    """How far two workers can go past one on this machine, from the same run's figures.

    The load generator and the backend (together ``l`` CPU µs per request: CPU 0 is
    saturated by them alone in the direct run, so l = 1 s / direct req/s) share the two
    CPUs with the two workers (``p`` µs per request each, from switchyard-1w), so at
    best 2 CPUs / (p + l) requests per second, against 1 / p for one pinned worker:
    a ceiling of 2p / (p + l) times one worker, whatever the proxy does."""
    one, two, direct = (res.get(k) or {} for k in ("switchyard-1w", "switchyard-2w", "direct"))
    p, d = one.get("cpu_us_per_req"), direct.get("rps")
    if not (pinned and p and d and one.get("rps") and two.get("rps")):
        return {}
    l_us = 1e6 / d
    ceiling_rps = 2e6 / (p + l_us)
    out = {"measured_ratio": two["rps"] / one["rps"], "proxy_us_per_req": p,
           "load_and_backend_us_per_req": l_us, "ceiling_rps": ceiling_rps,
           "ceiling_ratio": ceiling_rps / one["rps"]}
    log(f"   two workers: {two['rps']:.0f} req/s = {out['measured_ratio']:.2f}x one worker. Ceiling "
        f"here: the load generator and backend ({l_us:.1f} us/req = 1 s / direct req/s) share the "
        f"2 CPUs with the workers ({p:.1f} us/req), so at most 2 s / ({p:.1f} + {l_us:.1f}) us = "
        f"{ceiling_rps:.0f} req/s = {out['ceiling_ratio']:.2f}x one worker (1.4x would need "
        f"p >= 2.33 l)")
    return out


def process_rss(t: Target) -> list[dict]:
    """RSS of each process of a Switchyard target: the node (supervisor with --workers N)
    first, then its workers."""
    pids = t.pids()
    roles = ["node"] if len(pids) == 1 else ["supervisor"] + [f"worker {i + 1}" for i in range(len(pids) - 1)]
    return [{"pid": pid, "role": role, "rss_kib": rss_kib([pid])} for pid, role in zip(pids, roles)]


def host_sample(n_routes: int, k: int) -> list[str]:
    """Hosts that hit configured routes: exact ones (h{i}) and names under wildcards (w{i})."""
    rnd = random.Random(42)
    idx = list(range(n_routes - 1)) if n_routes - 1 <= k else rnd.sample(range(n_routes - 1), k)
    return [f"h{i}.bench.test" if i % 2 == 0 else f"x{i}.w{i}.bench.test" for i in idx] or [HOST]


def section_routes(lab: Lab, s: Settings, report: dict) -> None:
    """The same traffic against a small and a large route table (does lookup cost grow
    with the table?), then the large table with traffic spread over 1,000 of its routes
    (the working set grows: more route objects, stats and log prefixes in the CPU caches)."""
    small, big = s.route_counts
    nodes = {n: lab.start_switchyard(f"switchyard-{n}-routes", 1, routes=n) for n in (small, big)}
    same = host_sample(small, 1000)
    variants = [(f"{small}", small, same), (f"{big}", big, same),
                (f"{big} spread", big, host_sample(big, 1000))]
    scripts = {}
    for label, n, hosts in variants:
        for h in hosts[:3] + hosts[-3:]:
            lab.check(nodes[n], host=h)
        scripts[label] = lua_script(lab.tmp, hosts=hosts)
    load = Load("routes", "", "wrk", conns=s.conns)
    runs: dict[str, list] = {label: [] for label, _, _ in variants}
    if s.warmup:
        for label, n, _ in variants:
            run_wrk(lab, nodes[n].port, load, s.warmup, scripts[label])
    for _ in range(s.rounds):
        for label, n, _ in variants:
            pids = nodes[n].pids()
            c0 = cpu_seconds(pids)
            r = run_wrk(lab, nodes[n].port, load, s.duration, scripts[label])
            r["cpu_us_per_req"] = (cpu_seconds(pids) - c0) / r["requests"] * 1e6 if r["requests"] else None
            r["rss_kib"] = rss_kib(pids)
            runs[label].append(r)
    log(f"\n== Switchyard (1 worker), small keep-alive, {s.conns} connections, Host rotating over the "
        f"hosts shown (half exact, half under wildcards), alternating")
    log(f"{'routes':>14} {'hosts':>6} {'req/s':>9} {'x first':>8} {'p50':>8} {'p99':>8} {'CPU us/req':>10} "
        f"{'RSS MiB':>8} {'errors':>6}")
    out, first = {}, None
    for label, n, hosts in variants:
        r = summarize(runs[label])
        first = first or r["rps"]
        r["ratio_to_first"] = r["rps"] / first if first else None
        r["routes"], r["hosts"] = n, len(hosts)
        out[label] = r
        log(f"{label:>14} {len(hosts):>6} {fmt(r['rps']):>9} {fmt(r['ratio_to_first'], '{:.2f}'):>8} "
            f"{fmt_us(r['p50_us']):>8} {fmt_us(r['p99_us']):>8} {fmt(r['cpu_us_per_req'], '{:.1f}'):>10} "
            f"{fmt(r['rss_kib'] / 1024, '{:.1f}'):>8} {r['errors']:>6}")
    report["routes"] = out
    for t in nodes.values():
        t.proc.stop()


def cp_env(var_dir: Path, database_url: str = "", redis_url: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith("SWITCHYARD_")}
    env.update({"DJANGO_SETTINGS_MODULE": "controlplane.settings", "SWITCHYARD_VAR_DIR": str(var_dir),
                "SECRET_KEY": "bench-" + secrets.token_urlsafe(24), "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "DEBUG": "0", "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
                "NO_PROXY": "*", "no_proxy": "*"})
    if database_url:
        env["DATABASE_URL"] = database_url
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def cpbench(env: dict, *args: str, timeout: float = 600) -> dict:
    out = subprocess.run([PY, str(BENCH / "cpbench.py"), *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=timeout)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"cpbench {args[0]} failed ({out.returncode}):\n{out.stdout[-2000:]}\n"
                           f"{out.stderr[-4000:]}") from None


def section_compile(lab: Lab, s: Settings, report: dict) -> None:
    var = lab.tmp / "compile-var"
    var.mkdir()
    r = cpbench(cp_env(var), "compile", "--sizes", ",".join(map(str, s.compile_sizes)),
                "--repeat", str(s.compile_repeat), "--backend-port", str(lab.backend.port))
    log(f"\n== snapshot build and apply (embedded SQLite, medians of {r['repeat']}; routes half exact, half wildcard)")
    log(f"{'routes':>8} {'compile_snapshot':>17} {'parse_snapshot':>15} {'hash':>8} {'NodeState.apply':>16} "
        f"{'re-apply':>9} {'snapshot':>9}")
    for size, v in r["sizes"].items():
        log(f"{size:>8} {v['compile_ms']:>14.1f} ms {v['parse_ms']:>12.1f} ms {v['hash_ms']:>5.1f} ms "
            f"{v['apply_ms']:>13.1f} ms {v['reapply_ms']:>6.1f} ms {v['snapshot_bytes'] / 2 ** 20:>5.2f} MiB")
    report["snapshot"] = r


def production_urls(s: Settings) -> tuple[str, str, str]:
    """(database admin url, redis url, reason when unavailable)."""
    if s.production == "off":
        return "", "", "off (--quick or --production off)"
    db = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    rd = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    try:
        import psycopg
        import redis
        psycopg.connect(db, connect_timeout=3).close()
        redis.Redis.from_url(rd, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001 - reported as the reason
        return "", "", f"PostgreSQL/Redis not reachable ({type(exc).__name__}: {str(exc)[:80]})"
    return db, rd, ""


class ProductionDB:
    """A fresh PostgreSQL database and a Redis db index of its own (claimed with the same
    lock keys as the e2e tests, so the two never share one); removed at the end."""
    LOCK = "switchyard:e2e:db:{}"

    def __init__(self, admin_url: str, redis_url: str):
        import psycopg
        import redis
        from psycopg.conninfo import conninfo_to_dict
        self.admin_url = admin_url
        self.name = "switchyard_bench_" + secrets.token_hex(5)
        with psycopg.connect(admin_url, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{self.name}"')
        p = conninfo_to_dict(admin_url)
        auth = p.get("user", "postgres") + (f":{p['password']}" if p.get("password") else "")
        self.url = f"postgresql://{auth}@{p.get('host', '127.0.0.1')}:{p.get('port', '5432')}/{self.name}"
        base = redis_url.rsplit("/", 1)[0] if redis_url.count("/") >= 3 else redis_url
        self.server = redis.Redis.from_url(base + "/0")
        self.token = secrets.token_hex(8)
        for i in range(1, 16):
            if self.server.set(self.LOCK.format(i), self.token, nx=True, ex=3600):
                self.index = i
                break
        else:
            self.drop()
            raise RuntimeError("no free Redis database index")
        self.redis_url = f"{base}/{self.index}"
        redis.Redis.from_url(self.redis_url).flushdb()

    def drop(self) -> None:
        import psycopg
        import redis
        with psycopg.connect(self.admin_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        if getattr(self, "index", None):
            redis.Redis.from_url(self.redis_url).flushdb()
            if self.server.get(self.LOCK.format(self.index)) == self.token.encode():
                self.server.delete(self.LOCK.format(self.index))


def sync_run(lab: Lab, s: Settings, mode: str, database_url: str = "", redis_url: str = "") -> dict:
    root = lab.tmp / f"sync-{mode}"
    var = root / "var"
    var.mkdir(parents=True)
    env = cp_env(var, database_url, redis_url)
    m = subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    if m.returncode:
        raise RuntimeError(f"migrate failed: {m.stderr[-3000:]}")
    names = [f"bench-node-{i}" for i in range(1, 4)]
    setup = cpbench(env, "setup", "--backend-port", str(lab.backend.port), "--nodes", ",".join(names))
    port = free_port()
    daphne = Proc(f"daphne ({mode})", [str(Path(PY).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port),
                                        "controlplane.asgi:application"], root / "daphne.log", env=env)
    procs = [daphne]
    try:
        wait_port(port, daphne, 60)
        node_env = {k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith("SWITCHYARD_")}
        for n in names:
            tf = root / f"{n}.token"
            tf.write_text(setup["tokens"][n] + "\n")
            tf.chmod(0o600)
            procs.append(Proc(n, [PY, "-m", "dataplane", "--name", n, "--control-plane",
                                  f"ws://127.0.0.1:{port}/ws/dataplane/", "--token-file", str(tf),
                                  "--cache-dir", str(root / f"{n}-cache"), "--http", f"127.0.0.1:{free_port()}",
                                  "--https", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{free_port()}",
                                  "--access-log", str(root / f"{n}-access.log")], root / f"{n}.log", env=node_env))
        r = cpbench(env, "changes", "--count", str(s.changes), "--nodes", ",".join(names),
                    "--route", str(setup["route"]), timeout=60 + s.changes * 35)
        if "error" in r:
            raise RuntimeError(r["error"] + "\n" + "\n".join(p.tail(15) for p in procs))
        return r
    finally:
        for p in reversed(procs):
            p.stop()


def section_sync(lab: Lab, s: Settings, report: dict) -> None:
    out = {}
    log(f"\n== change through the service layer -> ACK recorded for all 3 nodes ({s.changes} changes, "
        "one after another)")
    out["embedded"] = sync_run(lab, s, "embedded")
    db, rd, reason = production_urls(s)
    if db:
        prod = ProductionDB(db, rd)
        try:
            out["production"] = sync_run(lab, s, "production", prod.url, prod.redis_url)
        finally:
            prod.drop()
    else:
        out["production"] = {"skipped": reason}
    log(f"{'mode':<11} {'median':>9} {'p99':>9} {'min':>9} {'max':>9} {'acked':>7}  note")
    notes = {"embedded": "SQLite + in-process layer: hint from the other process via the local datagram "
                         "bridge (DB poll every 0.5 s as fallback)",
             "production": "PostgreSQL + channels_redis: hint via Redis"}
    for mode, r in out.items():
        if "skipped" in r:
            log(f"{mode:<11} {'skipped':>9}  {r['skipped']}")
            continue
        log(f"{mode:<11} {fmt(r['median_ms'], '{:.0f}ms'):>9} {fmt(r['p99_ms'], '{:.0f}ms'):>9} "
            f"{fmt(r['min_ms'], '{:.0f}ms'):>9} {fmt(r['max_ms'], '{:.0f}ms'):>9} "
            f"{r['acked']:>3}/{r['changes']:<3}  {notes[mode]}")
    report["change_to_ack"] = out


def idle_memory(lab: Lab, t: Target, count: int) -> dict:
    settle = 0.2 if lab.s.quick else 1.0
    time.sleep(settle)
    before = rss_kib(t.pids())
    argv = pin(lab.load_cpus) + [PY, "-m", "bench.clients", "idle", "--port", str(t.port), "--count",
                                 str(count), "--hold", "120"]
    client = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = client.stdout.readline()
            if not line or line.startswith("ready"):
                break
        if not line.startswith("ready"):
            raise RuntimeError(f"idle client failed: {line} {client.stderr.read()[-2000:]}")
        opened = int(line.split()[1])
        failed = int(line.split()[3])
        time.sleep(settle)
        after = rss_kib(t.pids())
    finally:
        try:
            client.stdin.close()
        except OSError:
            pass
        try:
            client.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(client.pid, signal.SIGKILL)
            client.wait(10)
    per = (after - before) / opened if opened else None
    return {"connections": opened, "failed": failed, "rss_before_kib": before, "rss_after_kib": after,
            "kib_per_conn": per, "mib_per_10k": per * 10000 / 1024 if per is not None else None}


def section_idle(lab: Lab, s: Settings, report: dict) -> None:
    targets = [t for t in lab.targets if t.name in ("switchyard-1w", "nginx") and t.available]
    if not targets:
        targets = [lab.start_switchyard("switchyard-1w", 1)]
    out = {}
    for t in targets:
        out[t.name] = idle_memory(lab, t, s.idle_conns)
    log(f"\n== memory per idle keep-alive client connection ({s.idle_conns} connections from a separate "
        "process, each after one request; RSS of the proxy's processes before/after)")
    log(f"{'target':<15} {'opened':>7} {'RSS before':>11} {'RSS after':>10} {'KiB/conn':>9} {'MiB/10k':>8}")
    for name, r in out.items():
        log(f"{name:<15} {r['connections']:>7} {r['rss_before_kib'] / 1024:>8.1f}MiB "
            f"{r['rss_after_kib'] / 1024:>7.1f}MiB {fmt(r['kib_per_conn'], '{:.2f}'):>9} "
            f"{fmt(r['mib_per_10k'], '{:.1f}'):>8}" + (f"  ({r['failed']} failed)" if r["failed"] else ""))
    report["idle_connections"] = out


def _number(pattern: str, text: str) -> float | None:
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def section_health(lab: Lab, s: Settings, report: dict) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith("SWITCHYARD_")}
    env["PYTHONPATH"] = str(ROOT)
    argv = [PY, str(BENCH / "healthcheck_bench.py"), *s.hc_args]
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    text = out.stdout
    modes = []
    for block in re.split(r"\n== ", text)[1:]:
        name = block.splitlines()[0]
        modes.append({"mode": name, "rate": _number(r"check rate on schedule\s*:\s*([\d.]+)", block),
                      "needed": _number(r"needed (\d+)/s", block),
                      "capacity": _number(r"capacity\s*:\s*([\d.]+)", block),
                      "kept": bool(re.search(r"keeps the schedule\s*:\s*yes", block))})
    log(f"\n== health-check throughput (bench/healthcheck_bench.py {' '.join(s.hc_args)})")
    if not modes:
        log(f"   failed: {out.stderr[-1500:]}")
    for m in modes:
        log(f"   {m['mode']}: {fmt(m['rate'])} checks/s on schedule (needed {fmt(m['needed'])}), capacity "
            f"{fmt(m['capacity'])} checks/s of busy time, keeps schedule: {'yes' if m['kept'] else 'NO'}")
    report["health_checks"] = {"args": list(s.hc_args), "modes": modes, "exit": out.returncode}


def section_profile(lab: Lab, s: Settings, report: dict) -> None:
    """py-spy on a pinned 1-worker node under the small keep-alive load (bench/profile.py)."""
    from bench import profile
    if profile.py_spy() is None:
        log("\n== profile: skipped, py-spy is not installed (pip install -r requirements-test.txt)")
        report["profile"] = {"skipped": "py-spy not installed"}
        return
    t = lab.start_switchyard("switchyard-profile", 1)
    try:
        lab.check(t)
        load = Load("small_keepalive", "", "wrk", conns=s.conns)
        run_wrk(lab, t.port, load, max(1, s.warmup))
        plain = measure(lab, t, load, s.duration)  # the CPU split, without the profiler attached
        seconds = max(1, s.duration - 2)
        out = lab.tmp / "profile.raw"
        spy = profile.record(t.pids()[0], seconds, out)
        r = run_wrk(lab, t.port, load, s.duration)
        _, err = spy.communicate(timeout=seconds + 60)
        if not out.exists():
            raise RuntimeError(f"py-spy wrote no profile: {err[-1000:]}")
        summary = profile.summarize(out)
        summary["rps"] = r["rps"]
        summary["unprofiled"] = {k: plain[k] for k in ("rps", "cpu_us_per_req", "sys_us_per_req")}
    finally:
        t.proc.stop()
    log(f"\n== where a worker's time goes (py-spy --native, {seconds}s of the small keep-alive load "
        f"at {r['rps']:.0f} req/s, 1 worker pinned to CPU {lab.proxy_cpus})")
    u = summary["unprofiled"]
    if u["cpu_us_per_req"] is not None:
        log(f"   without the profiler: {u['rps']:.0f} req/s, CPU {u['cpu_us_per_req']:.1f} us/request = "
            f"user {u['cpu_us_per_req'] - u['sys_us_per_req']:.1f} + system {u['sys_us_per_req']:.1f} "
            f"(/proc/PID/stat; compare nginx's split in the first table)")
    profile.print_summary(summary, log)
    report["profile"] = summary


# ----------------------------------------------------------------------------- main
def tool_versions() -> dict:
    def first(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True)
    return {"nginx": first([TOOLS["nginx"], "-v"]), "haproxy": first([TOOLS["haproxy"], "-v"]),
            "wrk": first([TOOLS["wrk"], "-v"]), "python": platform.python_version(),
            "kernel": platform.release(), "cpus": os.cpu_count(),
            "git": git.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")}


def missing_tools() -> list[str]:
    return [name for name, path in TOOLS.items() if not os.access(path, os.X_OK)] + \
        ([] if shutil.which("taskset") else ["util-linux"])


def parse_args(argv=None) -> Settings:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (seconds): a smoke run")
    ap.add_argument("--rounds", type=int, help="alternation rounds (default 3)")
    ap.add_argument("--duration", type=int, help="seconds per load run (default 10)")
    ap.add_argument("--warmup", type=int, help="warm-up seconds per target and load (default 2)")
    ap.add_argument("--connections", type=int, help="connections of the small-response loads (64)")
    ap.add_argument("--rate", type=int, help="fixed-rate load, requests/s (3000)")
    ap.add_argument("--changes", type=int, help="changes for change -> ACK (50)")
    ap.add_argument("--idle-connections", type=int, help="idle connections for the memory figure (10000)")
    ap.add_argument("--production", choices=("auto", "on", "off"),
                    help="change -> ACK in production mode (PostgreSQL + Redis): auto = when reachable")
    ap.add_argument("--results", help="directory for the JSON results (default bench/results)")
    ap.add_argument("--only", help="comma-separated sections: " + ",".join(Settings.sections))
    a = ap.parse_args(argv)
    s = Settings.quick_settings() if a.quick else Settings()
    for attr, val in (("rounds", a.rounds), ("duration", a.duration), ("warmup", a.warmup),
                      ("conns", a.connections), ("rate", a.rate), ("changes", a.changes),
                      ("idle_conns", a.idle_connections), ("production", a.production)):
        if val is not None:
            setattr(s, attr, val)
    if a.only:
        wanted = tuple(x.strip() for x in a.only.split(",") if x.strip())
        bad = set(wanted) - set(Settings.sections)
        if bad:
            ap.error(f"unknown section(s): {', '.join(sorted(bad))}")
        s.sections = wanted
    if a.results:
        s.results = a.results
    if s.rounds < 1 or s.duration < 1:
        ap.error("--rounds and --duration must be at least 1")
    return s


def main(argv=None) -> int:
    s = parse_args(argv)
    missing = missing_tools()
    if missing:
        log(f"bench: missing {', '.join(missing)}; install them with:\n"
            f"    sudo apt-get install -y {' '.join(missing)}")
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))   # children inherit it
    if hard < s.idle_conns + 1024 and "idle" in s.sections:
        s.idle_conns = max(100, hard - 1024)
        log(f"bench: RLIMIT_NOFILE hard limit {hard}: idle connections reduced to {s.idle_conns}")

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background

    started = dt.datetime.now().astimezone()
    report = {"started": started.isoformat(timespec="seconds"), "quick": s.quick,
              "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.__dict__.items()},
              "environment": tool_versions(), "loadavg_start": os.getloadavg()}
    log(f"Switchyard bench {'(quick) ' if s.quick else ''}{started:%Y-%m-%d %H:%M}  "
        f"{report['environment']['git']}  {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    log("fixed-rate client: Python asyncio open-loop (Debian has no wrk2)")
    lab = Lab(s)
    report["tmp"] = str(lab.tmp)
    rc = 0
    try:
        lab.start_backend()
        lab.check(lab.backend)
        for name, fn in (("compare", section_compare), ("routes", section_routes), ("idle", section_idle),
                         ("compile", section_compile), ("sync", section_sync), ("health", section_health),
                         ("profile", section_profile)):
            if name not in s.sections:
                continue
            try:
                fn(lab, s, report)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - report and go on with the other sections
                rc = 1
                report.setdefault("errors", {})[name] = str(exc)
                log(f"\n!! section {name} failed: {exc}")
    except KeyboardInterrupt:
        log("\ninterrupted: stopping everything")
        rc = 130
    finally:
        lab.close()
    report["loadavg_end"] = os.getloadavg()
    report["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    results = Path(s.results)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"bench-{started:%Y%m%d-%H%M%S}{'-quick' if s.quick else ''}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    shutil.copyfile(path, results / ("latest-quick.json" if s.quick else "latest.json"))
    log(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}; results: {path}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
