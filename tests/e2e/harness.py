"""Real processes for the end-to-end tests.

``ControlPlaneEnv`` is one control-plane installation in a temp var dir, in one of two
modes: ``embedded`` (SQLite, in-process channel layer; no DATABASE_URL/REDIS_URL) or
``production`` (a fresh PostgreSQL database ``switchyard_e2e_<random>`` and a Redis
database index of its own, both removed at the end). ``Stack`` runs, on free loopback
ports: Daphne (``controlplane.asgi``), data-plane nodes (``python -m dataplane``) and
aiohttp upstream servers. Every wait is a poll with a deadline, never a fixed sleep.
"""
from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support import WaitTimeout, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
CPSHELL = Path(__file__).with_name("cpshell.py")

# Environment a test run may have that must not leak into the stack's processes.
_SCRUB = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "DEBUG",
          "DJANGO_SETTINGS_MODULE", "PYTEST_XDIST_WORKER", "PYTEST_CURRENT_TEST", "CELERY_TASK_ALWAYS_EAGER",
          "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
          "ALL_PROXY")


class HarnessError(AssertionError):
    pass


def base_env() -> dict:
    """The test run's environment without anything that would change what the stack does
    (database, broker, every SWITCHYARD_* setting, node flags from SWITCHYARD_NODE_*, proxies)."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith("SWITCHYARD_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(REPO)
    env["NO_PROXY"] = env["no_proxy"] = "*"
    return env


# ----------------------------------------------------------------------------- processes
class Proc:
    """A child process in its own session with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict, log_path: Path, cwd: Path = REPO):
        self.name, self.argv, self.env, self.log_path, self.cwd = name, argv, env, log_path, cwd
        self.popen: subprocess.Popen | None = None

    def start(self) -> "Proc":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        log.write(f"\n===== start {' '.join(self.argv)}\n".encode())
        log.flush()
        self.popen = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        log.close()
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL, no chance to clean up (a crash)."""
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=30)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if not self.alive:
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return f"--- {self.name}: no log"
        return f"--- {self.name} ({self.log_path}), last {lines} lines:\n" + "\n".join(text.splitlines()[-lines:])


class CPShell:
    """A long-lived ``cpshell.py`` process: service-layer calls against the stack's database."""

    def __init__(self, env: dict, log_path: Path, script: Path = CPSHELL):
        self.log = open(log_path, "ab")
        self.popen = subprocess.Popen([PYTHON, str(script)], cwd=REPO, env=env, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1)
        first = self.popen.stdout.readline()
        if not first:
            raise HarnessError(f"cpshell did not start; see {log_path}")
        self.log_path = log_path
        self.lock = threading.Lock()

    def call(self, op: str, **args):
        with self.lock:
            self.popen.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self.popen.stdin.flush()
            line = self.popen.stdout.readline()
        if not line:
            raise HarnessError(f"cpshell died during {op}; see {self.log_path}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise HarnessError(f"cpshell {op}({args}) failed: {reply['error']}\n{reply.get('traceback', '')}")
        return reply["result"]

    def close(self):
        if self.popen.poll() is None:
            self.popen.stdin.close()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()


# ----------------------------------------------------------------------------- modes
class ControlPlaneEnv:
    """One control-plane installation (database + var dir), shared by the tests of a session."""

    def __init__(self, mode: str, root: Path, database_url: str = "", redis_url: str = ""):
        self.mode, self.root = mode, root
        self.var_dir = root / "cp-var"
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.env = base_env()
        self.env.update({
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "SWITCHYARD_VAR_DIR": str(self.var_dir),
            "SECRET_KEY": "e2e-" + secrets.token_urlsafe(32),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DEBUG": "0",
            "LOG_LEVEL": os.environ.get("SWITCHYARD_E2E_LOG_LEVEL", "INFO"),
        })
        if mode == "production":
            self.env["DATABASE_URL"] = database_url
            self.env["REDIS_URL"] = redis_url
        self.shell: CPShell | None = None

    def manage(self, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        result = subprocess.run([PYTHON, "manage.py", *args], cwd=REPO, env={**self.env, **(env or {})},
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise HarnessError(f"manage.py {' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
        return result

    def setup(self) -> "ControlPlaneEnv":
        self.manage("migrate", "--noinput", "-v", "0")
        self.shell = CPShell(self.env, self.root / "cpshell.log")
        return self

    def call(self, op: str, **args):
        return self.shell.call(op, **args)

    def close(self):
        if self.shell:
            self.shell.close()


class PostgresDatabase:
    """A fresh database on the test PostgreSQL server, dropped on ``drop()``."""

    def __init__(self, admin_url: str):
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        self.admin_url = admin_url
        self.name = "switchyard_e2e_" + secrets.token_hex(6)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        params = conninfo_to_dict(admin_url)
        user = params.get("user", "postgres")
        password = params.get("password", "")
        host = params.get("host", "127.0.0.1")
        port = params.get("port", "5432")
        auth = user + (f":{password}" if password else "")
        self.url = f"postgresql://{auth}@{host}:{port}/{self.name}"

    def drop(self):
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class RedisDatabase:
    """A Redis database index of our own (1..15), claimed with a lock key in db 0 and flushed."""

    LOCK = "switchyard:e2e:db:{}"

    def __init__(self, server_url: str):
        import redis

        base = server_url.rsplit("/", 1)[0] if server_url.count("/") >= 3 else server_url
        self.server = redis.Redis.from_url(base + "/0")
        self.token = secrets.token_hex(8)
        for index in range(1, 16):
            if self.server.set(self.LOCK.format(index), self.token, nx=True, ex=6 * 3600):
                self.index = index
                break
        else:
            raise HarnessError("no free Redis database index (1..15) for the e2e tests")
        self.url = f"{base}/{self.index}"
        redis.Redis.from_url(self.url).flushdb()

    def release(self):
        import redis

        redis.Redis.from_url(self.url).flushdb()
        if self.server.get(self.LOCK.format(self.index)) == self.token.encode():
            self.server.delete(self.LOCK.format(self.index))


# ----------------------------------------------------------------------------- upstreams
class Upstream:
    """An aiohttp server on a loopback port, in a thread; answers ``upstream=<name>`` + headers."""

    def __init__(self, name: str):
        self.name = name
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner = None
        self._thread = threading.Thread(target=self._run, name=f"upstream-{name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(15) or not self.port:
            raise HarnessError(f"upstream {name} did not start")

    def _run(self):
        from aiohttp import web

        async def handle(request):
            body = json.dumps({"upstream": self.name, "path": request.path_qs,
                               "headers": dict(request.headers)})
            return web.Response(text=f"upstream={self.name}\n{body}\n")

        async def start():
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]

        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(start())
        finally:
            self._ready.set()
        self._loop.run_forever()

    def close(self):
        async def stop():
            if self._runner:
                await self._runner.cleanup()

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# ----------------------------------------------------------------------------- HTTP
@dataclass
class Response:
    status: int
    headers: dict
    body: str


def http_get(port: int, path: str = "/", host: str | None = None, timeout: float = 3.0) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host or f"127.0.0.1:{port}", "Connection": "close"})
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                        resp.read().decode("utf-8", "replace"))
    finally:
        conn.close()


# ----------------------------------------------------------------------------- the stack
class Node:
    def __init__(self, stack: "Stack", name: str, token: str):
        self.stack, self.name = stack, name
        self.dir = stack.root / f"node-{name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.token_file = self.dir / "node.token"
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        self.cache_dir = self.dir / "cache"
        self.http_port, self.https_port, self.admin_port = free_port(), free_port(), free_port()
        self.proc: Proc | None = None

    def argv(self) -> list[str]:
        return [PYTHON, "-m", "dataplane", "--name", self.name,
                "--control-plane", self.stack.ws_url, "--token-file", str(self.token_file),
                "--cache-dir", str(self.cache_dir),
                "--http", f"127.0.0.1:{self.http_port}", "--https", f"127.0.0.1:{self.https_port}",
                "--admin", f"127.0.0.1:{self.admin_port}"]

    def start(self, wait: bool = True) -> "Node":
        env = base_env()
        self.proc = Proc(f"node {self.name}", self.argv(), env, self.dir / "node.log").start()
        if wait:
            self.wait_alive()
        return self

    def wait_alive(self, timeout: float = 30.0) -> float:
        def up():
            if not self.proc.alive:
                raise HarnessError(f"node exited with {self.proc.popen.returncode}\n{self.proc.tail()}")
            return http_get(self.admin_port, "/healthz", timeout=1).status == 200
        try:
            return wait_until(up, timeout, f"node {self.name} /healthz", on_timeout=self.proc.tail)[1]
        except WaitTimeout as exc:
            if "node exited" in str(exc):
                raise HarnessError(str(exc).split(" (last error")[0] + "\n" + self.proc.tail()) from None
            raise

    def get(self, host: str, path: str = "/") -> Response:
        return http_get(self.http_port, path, host=host, timeout=3)

    def admin(self, path: str) -> Response:
        return http_get(self.admin_port, path, timeout=3)

    def readyz(self) -> dict | None:
        """The node's own view (admin ``/readyz``: ``ready version=N hash=H``); None when not ready."""
        r = self.admin("/readyz")
        if r.status != 200:
            return None
        fields = dict(part.split("=", 1) for part in r.body.split() if "=" in part)
        version = fields.get("version")
        return {"version": int(version) if version and version.isdigit() else version, "hash": fields.get("hash")}

    def wait_served(self, host: str, upstream: str, timeout: float = 20.0, path: str = "/") -> float:
        """Poll a request through the node until ``upstream`` answers it; returns the seconds taken."""
        def served():
            if not self.proc.alive:
                raise HarnessError(f"node exited with {self.proc.popen.returncode}")
            r = self.get(host, path)
            return r.status == 200 and f"upstream={upstream}\n" in r.body
        return wait_until(served, timeout, f"{host} served by upstream {upstream} through node {self.name}",
                          interval=0.02, on_timeout=self.stack.logs)[1]

    def stop(self):
        if self.proc:
            self.proc.stop()

    def kill(self):
        if self.proc:
            self.proc.kill()


class Stack:
    """Daphne + nodes + upstreams for one test, on top of a session's ``ControlPlaneEnv``."""

    def __init__(self, cp: ControlPlaneEnv, root: Path, cp_env: dict | None = None):
        self.cp, self.root = cp, root
        self.root.mkdir(parents=True, exist_ok=True)
        self.cp_port = free_port()
        self.cp_extra_env = dict(cp_env or {})
        self.daphne: Proc | None = None
        self.nodes: list[Node] = []
        self.upstreams: list[Upstream] = []
        self.tag = secrets.token_hex(3)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.cp_port}/ws/dataplane/"

    # control plane
    def start_control_plane(self, wait: bool = True, timeout: float = 60.0) -> float:
        argv = [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.cp_port), "controlplane.asgi:application"]
        started = time.monotonic()
        self.daphne = Proc("daphne", argv, {**self.cp.env, **self.cp_extra_env}, self.root / "daphne.log").start()
        if wait:
            self.wait_control_plane(timeout)
        return time.monotonic() - started

    def wait_control_plane(self, timeout: float = 60.0) -> float:
        def up():
            if not self.daphne.alive:
                raise HarnessError(f"daphne exited with {self.daphne.popen.returncode}\n{self.daphne.tail()}")
            return http_get(self.cp_port, "/admin/login/", host="127.0.0.1", timeout=2).status < 500
        return wait_until(up, timeout, "the control plane (Daphne) to answer", interval=0.1,
                          on_timeout=self.daphne.tail)[1]

    def kill_control_plane(self):
        self.daphne.kill()

    # nodes and upstreams
    def add_node(self, start: bool = True) -> Node:
        name = f"e2e-{self.tag}-{len(self.nodes) + 1}"
        token = self.cp.call("register_node", name=name)["token"]
        node = Node(self, name, token)
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def add_upstream(self, name: str) -> Upstream:
        upstream = Upstream(f"{name}-{self.tag}")
        self.upstreams.append(upstream)
        return upstream

    def create_site(self, name: str, upstream: Upstream, drop_hint: bool = False) -> dict:
        """Pool + route through the service layer; returns host and the new latest version/hash."""
        host = f"{name}-{self.tag}.e2e.test"
        latest = self.cp.call("create_site", name=f"{name}-{self.tag}", host=host, port=upstream.port,
                              drop_hint=drop_hint)
        return {"host": host, **latest}

    def node_record(self, node: Node) -> dict:
        return self.cp.call("node", name=node.name)

    def wait_node_in_sync(self, node: Node, timeout: float = 30.0) -> tuple[dict, float]:
        """Until the node's recorded applied version *and hash* equal the latest version's."""
        def in_sync():
            latest = self.cp.call("latest")
            rec = self.node_record(node)
            if rec["applied_hash"] == latest["hash"] and rec["applied_version"] == latest["version"]:
                return {"latest": latest, "node": rec}
            return None
        return wait_until(in_sync, timeout, f"node {node.name} to report the latest version and hash",
                          interval=0.1, on_timeout=self.logs)

    def logs(self) -> str:
        parts = []
        if self.daphne:
            parts.append(self.daphne.tail())
        parts += [n.proc.tail() for n in self.nodes if n.proc]
        return "\n".join(parts)

    def close(self):
        for node in self.nodes:
            node.stop()
        if self.daphne:
            self.daphne.stop()
        for upstream in self.upstreams:
            upstream.close()


# ----------------------------------------------------------------------------- Celery (additive)
PROCFILE = REPO / "Procfile"


def procfile_argv(process: str, env: dict | None = None) -> list[str]:
    """The Procfile line of ``process`` as an argv: ``${NAME:-default}`` expanded from ``env``
    (else the default) and ``.venv/bin/<tool>`` run as ``PYTHON -m <tool>`` — so the tests
    start the worker and beat exactly as ``make run`` does."""
    import re
    import shlex

    env = env or {}
    for line in PROCFILE.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() == process:
            break
    else:
        raise HarnessError(f"no {process!r} line in {PROCFILE}")
    pattern = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")
    for _ in range(3):  # defaults may themselves refer to variables
        command = pattern.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), command)
    argv = shlex.split(command)
    if argv and argv[0] == "exec":
        argv = argv[1:]
    tool = Path(argv[0]).name
    if tool == "python":  # .venv/bin/python -m module ...
        return [PYTHON, *argv[1:]]
    return [PYTHON, "-m", tool, *argv[1:]]


class CeleryProcs:
    """``celery -A controlplane worker`` and ``beat`` (the Procfile's lines) against a
    control plane's database and broker (embedded: the filesystem broker under its var
    dir; production: its Redis database). ``extra_env`` adds settings (e-mail server, ...)."""

    def __init__(self, cp: ControlPlaneEnv, root: Path, extra_env: dict | None = None):
        self.cp, self.root = cp, root
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = {**cp.env, **(extra_env or {})}
        self.tag = secrets.token_hex(3)
        self.worker: Proc | None = None
        self.beat: Proc | None = None

    def start_worker(self, timeout: float = 60.0) -> float:
        argv = procfile_argv("worker", self.env) + [
            "-n", f"e2e-{self.tag}@%h", "--without-gossip", "--without-mingle"]
        started = time.monotonic()
        self.worker = Proc("celery worker", argv, self.env, self.root / "worker.log").start()
        wait_until(lambda: self._alive(self.worker) and " ready." in self._log(self.worker), timeout,
                   "the Celery worker to be ready", interval=0.1, on_timeout=self.logs)
        return time.monotonic() - started

    def start_beat(self, timeout: float = 60.0) -> float:
        argv = procfile_argv("beat", self.env) + ["-s", str(self.root / "celerybeat-schedule"),
                                                  "--pidfile", str(self.root / "beat.pid")]
        started = time.monotonic()
        self.beat = Proc("celery beat", argv, self.env, self.root / "beat.log").start()
        wait_until(lambda: self._alive(self.beat) and "beat: Starting" in self._log(self.beat), timeout,
                   "Celery beat to start", interval=0.1, on_timeout=self.logs)
        return time.monotonic() - started

    def task_succeeded(self, task_id: str) -> str | None:
        """The worker's log line for a finished task (``... succeeded in 0.01s: <result>``)."""
        for line in self._log(self.worker).splitlines():
            if f"[{task_id}] succeeded" in line:
                return line
        return None

    @staticmethod
    def _alive(proc: Proc) -> bool:
        if not proc.alive:
            raise HarnessError(f"{proc.name} exited with {proc.popen.returncode}\n{proc.tail()}")
        return True

    @staticmethod
    def _log(proc: Proc) -> str:
        try:
            return proc.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def logs(self, lines: int = 60) -> str:
        return "\n".join(p.tail(lines) for p in (self.worker, self.beat) if p)

    def close(self):
        for proc in (self.beat, self.worker):
            if proc:
                proc.stop()


class UpstreamProcess:
    """An HTTP upstream in its own process on a fixed loopback port, so that it can really
    die (SIGKILL: listener and connections gone, new connections refused) and come back on
    the same port. Answers every request with ``upstream=<name>``."""

    SCRIPT = r"""
import sys
from aiohttp import web
name, port = sys.argv[1], int(sys.argv[2])
async def handle(request):
    return web.Response(text=f"upstream={name}\n")
app = web.Application()
app.router.add_route("*", "/{tail:.*}", handle)
web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, reuse_address=True)
"""

    def __init__(self, name: str, root: Path, port: int | None = None):
        self.name, self.root = name, root
        self.port = port or free_port()
        self.proc: Proc | None = None

    def start(self, timeout: float = 20.0) -> "UpstreamProcess":
        self.proc = Proc(f"upstream {self.name}", [PYTHON, "-c", self.SCRIPT, self.name, str(self.port)],
                         base_env(), self.root / f"upstream-{self.name}.log").start()

        def up():
            if not self.proc.alive:
                raise HarnessError(f"upstream {self.name} exited\n{self.proc.tail()}")
            return f"upstream={self.name}\n" in http_get(self.port, "/", timeout=1).body
        wait_until(up, timeout, f"upstream {self.name} on port {self.port}", interval=0.05,
                   on_timeout=self.proc.tail)
        return self

    def kill(self) -> None:
        """SIGKILL: the process dies at once, as a crashed backend does."""
        if self.proc:
            self.proc.kill()

    def close(self) -> None:
        if self.proc:
            self.proc.stop(timeout=5)


class RedisServer:
    """A ``redis-server`` of one test on a free loopback port (the machine's shared Redis is
    never touched), without persistence: it can really stop (its data gone), come back on the
    same port, or freeze (SIGSTOP: connections stay open, nothing answers)."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Proc | None = None

    def start(self) -> "RedisServer":
        import redis

        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.root)]
        self.proc = Proc("redis-server", argv, base_env(), self.root / "redis.log").start()
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            wait_until(client.ping, 20, f"redis-server on port {self.port}", on_timeout=self.proc.tail)
        finally:
            client.close()
        return self

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=2)

    def stop(self) -> None:
        """SIGTERM and wait for the process to end."""
        if self.proc:
            self.proc.stop()

    def freeze(self) -> None:
        self.proc.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.signal(signal.SIGCONT)


@contextlib.contextmanager
def stack_on_own_redis(root: Path, postgres_url: str):
    """(stack, database, redis server): Daphne in production mode on a fresh PostgreSQL
    database and a ``RedisServer`` of its own, which the test may stop or freeze."""
    db = PostgresDatabase(postgres_url)
    server = RedisServer(root).start()
    cp = ControlPlaneEnv("production", root / "cp", database_url=db.url, redis_url=server.url)
    stack = Stack(cp, root / "stack")
    try:
        cp.setup()
        stack.start_control_plane()
        yield stack, db, server
    finally:
        stack.close()
        cp.close()
        server.thaw()
        server.stop()
        db.drop()
