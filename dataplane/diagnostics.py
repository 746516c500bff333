"""Diagnostic commands on a node: live log tail, request capture, probes.

Two parts:

- ``HUB`` (one per process) is what the hot path sees. ``forwarder.Exchange`` checks
  ``HUB.tailing`` when a request finishes and ``HUB.capturing`` when a route matched:
  one attribute check each while nobody watches. When someone does, matching access
  lines go into a bounded buffer per tail session (full: the line is dropped and
  counted, never waited for), and armed captures record the request's headers as
  received, as sent upstream, and the response headers (credentials and query values
  redacted here, so secrets never leave the node; tail lines carry the path without
  its query). Tail lines and capture records name how an exchange ended as the access
  log does: ``proxy_status`` is the RFC 9209 error type, ``reason`` the finer reason
  (null when the type says it all).
- ``NodeDiagnostics`` (one per node, beside the ``SyncClient``) answers the control
  plane's commands (message formats at the bottom of ``dataplane/schema.py``): it
  drains the hub into ``tail.lines`` / ``capture.record`` messages every
  ``DRAIN_SECONDS``, and runs ``probe``, ``tls.check`` and ``synthetic`` as tasks,
  answering ``probe.result`` / ``synthetic.result``. With ``--workers N`` the
  supervisor's instance relays tail/capture commands to the workers, whose hubs send
  their output back over the worker link (``workers.py``).
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import time
from typing import Any, Awaitable, Callable

from dataplane import errors, schema
from dataplane.probe import probe, redact, redact_query

log = logging.getLogger("switchyard.diagnostics")

DRAIN_SECONDS = 0.25
TAIL_BUFFER = 1000          # lines held per tail session between drains; more are dropped
TAIL_BATCH = 500            # lines per tail.lines message
MAX_TAILS = 32
MAX_CAPTURES = 32
MAX_CAPTURE_COUNT = 20
MAX_EXPIRY_SECONDS = 900.0
MAX_PENDING_RECORDS = 200
MAX_HEADER_VALUE = 2048
PROBE_CONCURRENCY = 8


def _now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"


def _remaining(expires: Any, default: float = 300.0) -> float:
    """Seconds until an epoch ``expires`` (bounded); the node's monotonic clock keeps it."""
    if isinstance(expires, (int, float)) and not isinstance(expires, bool):
        return max(0.0, min(float(expires) - time.time(), MAX_EXPIRY_SECONDS))
    return default


def logged_as(code: str) -> tuple[str | None, str | None]:
    """How the exchange's ending ``code`` is logged: (``proxy_status``, the RFC 9209
    error type; ``reason``, the finer reason or None), as in the access log."""
    if not code:
        return None, None
    return errors.LOGGED.get(code) or (code, None)


# ---------------------------------------------------------------- tail

class TailFilter:
    __slots__ = ("routes", "hosts", "statuses", "classes", "proxy_status", "clients")

    def __init__(self, f: Any):
        f = f if isinstance(f, dict) else {}

        def strs(key: str, lower: bool = True) -> frozenset | None:
            v = f.get(key)
            if v in (None, "", []):
                return None
            items = v if isinstance(v, list) else [v]
            return frozenset((str(x).lower() if lower else str(x)) for x in items[:100])

        routes = f.get("routes")
        self.routes = None
        if routes is not None:  # [] means: nothing (a tenant without routes)
            self.routes = frozenset(int(r) for r in (routes if isinstance(routes, list) else [routes])
                                    if isinstance(r, int) or str(r).isdigit())
        self.hosts = strs("hosts")
        statuses = strs("status") or frozenset()
        self.statuses = frozenset(int(s) for s in statuses if s.isdigit()) or None
        self.classes = frozenset(s[0] for s in statuses if len(s) == 3 and s.endswith("xx")) or None
        self.proxy_status = strs("proxy_status")
        nets = []
        for c in (strs("clients", lower=False) or ()):
            try:
                nets.append(ipaddress.ip_network(c, strict=False))
            except ValueError:
                continue
        self.clients = tuple(nets) or None

    def match(self, route_id: int | None, host: str, status: int, code: str, client: str) -> bool:
        if self.routes is not None and route_id not in self.routes:
            return False
        if self.hosts is not None and host not in self.hosts:
            return False
        if self.statuses is not None or self.classes is not None:
            ok = (self.statuses is not None and status in self.statuses) or \
                 (self.classes is not None and str(status)[:1] in self.classes)
            if not ok:
                return False
        if self.proxy_status is not None:  # by RFC 9209 type or by finer reason
            if not code or (code not in self.proxy_status
                            and logged_as(code)[0] not in self.proxy_status):
                return False
        if self.clients is not None:
            try:
                ip = ipaddress.ip_address(client.split("%", 1)[0])
            except ValueError:
                return False
            if ip.version == 6 and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            if not any(ip.version == n.version and ip in n for n in self.clients):
                return False
        return True


class TailSession:
    __slots__ = ("id", "filter", "deadline", "lines", "dropped", "sent", "total_dropped")

    def __init__(self, sid: str, f: Any, expires: Any):
        self.id = sid
        self.filter = TailFilter(f)
        self.deadline = time.monotonic() + _remaining(expires, 60.0)
        self.lines: list[dict] = []
        self.dropped = 0
        self.sent = 0
        self.total_dropped = 0


class CaptureSession:
    __slots__ = ("id", "route", "remaining", "deadline", "request_id")

    def __init__(self, sid: str, route: int, count: int, expires: Any, request_id: str | None):
        self.id = sid
        self.route = route
        self.remaining = max(1, min(int(count), MAX_CAPTURE_COUNT))
        self.deadline = time.monotonic() + _remaining(expires, 300.0)
        self.request_id = request_id or None


def parse_head(head: bytes) -> tuple[str, list[list[str]]]:
    """Request/status line and headers of an HTTP head, values redacted."""
    text = head.decode("latin-1")
    end = text.find("\r\n\r\n")
    if end >= 0:
        text = text[:end]
    lines = text.split("\r\n")
    first = lines[0] if lines[0].startswith("HTTP/") else redact_request_line(lines[0])
    out = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            name = name.strip()
            out.append([name, redact(name, value.strip())[:MAX_HEADER_VALUE]])
    return first, out


def redact_request_line(line: str) -> str:
    """``METHOD target VERSION`` with the target's query values redacted."""
    method, _, rest = line.partition(" ")
    target, sp, version = rest.rpartition(" ")
    return f"{method} {redact_query(target)}{sp}{version}" if sp else f"{method} {redact_query(rest)}"


def _headers(raw: list) -> list[list[str]]:
    """The exchange's received headers ([(lname, name, value)]) or upstream ones
    ([(name, value)]) as redacted [name, value] pairs."""
    out = []
    for h in raw:
        name, value = (h[1], h[2]) if len(h) == 3 else (h[0], h[1])
        n = name.decode("latin-1")
        out.append([n, redact(n, value.decode("latin-1"))[:MAX_HEADER_VALUE]])
    return out


class Hub:
    """Per-process state of tails and captures; the hot path reads two booleans."""

    def __init__(self) -> None:
        self.tailing = False
        self.capturing = False
        self.tails: dict[str, TailSession] = {}
        self.captures: dict[str, CaptureSession] = {}
        self.records: list[dict] = []
        self.node = ""
        self.pid = os.getpid()

    # ---- commands (from NodeDiagnostics or the worker link)
    def command(self, msg: dict) -> None:
        kind = msg.get("type")
        sid = str(msg.get("id") or "")[:64]
        if not sid:
            return
        if kind == schema.MSG_TAIL_START:
            s = self.tails.get(sid)
            if s is None:
                if len(self.tails) >= MAX_TAILS:
                    return
                self.tails[sid] = TailSession(sid, msg.get("filter"), msg.get("expires"))
            else:  # a renewal: new deadline (and filter)
                s.filter = TailFilter(msg.get("filter"))
                s.deadline = time.monotonic() + _remaining(msg.get("expires"), 60.0)
        elif kind == schema.MSG_TAIL_STOP:
            self.tails.pop(sid, None)
        elif kind == schema.MSG_CAPTURE_START:
            route = msg.get("route")
            if (isinstance(route, int) and not isinstance(route, bool)
                    and (sid in self.captures or len(self.captures) < MAX_CAPTURES)):
                count = msg.get("count") if isinstance(msg.get("count"), int) else 1
                rid = msg.get("request_id")
                self.captures[sid] = CaptureSession(sid, route, count, msg.get("expires"),
                                                    str(rid)[:128] if rid else None)
        elif kind == schema.MSG_CAPTURE_STOP:
            self.captures.pop(sid, None)
        self._flags()

    def _flags(self) -> None:
        self.tailing = bool(self.tails)
        self.capturing = bool(self.captures)

    def sweep(self) -> None:
        now = time.monotonic()
        for d in (self.tails, self.captures):
            for sid in [k for k, s in d.items() if s.deadline <= now]:
                del d[sid]
        self._flags()

    # ---- hot path (only when a flag is set)
    def tail(self, ex: Any, status: int, code: str, duration: float) -> None:
        conn = ex.conn
        route = ex.route
        rid = route.id if route is not None else None
        host = ex.host_s
        client = conn.client_ip
        now = time.monotonic()
        line = None
        for s in list(self.tails.values()):
            if s.deadline <= now:
                continue
            if not s.filter.match(rid, host, status, code, client):
                continue
            if len(s.lines) >= TAIL_BUFFER:
                s.dropped += 1
                continue
            if line is None:
                line = self._line(ex, status, code, duration)
            s.lines.append(line)

    def _line(self, ex: Any, status: int, code: str, duration: float) -> dict:
        conn = ex.conn
        route = ex.route
        t = ex.target
        ptype, reason = logged_as(code)
        reason = getattr(ex, "detail", None) or reason  # a policy refusal names its policy
        tls = None
        if conn.tls_log and '"tls_version":null' not in conn.tls_log:
            try:
                tls = json.loads("{" + conn.tls_log + "}")
            except ValueError:
                tls = None
        return {
            "time": _now_iso(), "node": self.node, "pid": self.pid,
            "route": route.name if route is not None else None,
            "route_id": route.id if route is not None else None,
            "tenant": route.tenant if route is not None else None,
            "method": ex.method.decode("latin-1"), "host": ex.host_s,
            "path": ex.path_b.decode("latin-1")[:2048], "status": status,
            "proxy_status": ptype, "reason": reason,
            "upstream_addr": t.addr if t is not None else None,
            "upstream_status": ex.upstream_status, "duration": round(duration, 6),
            "upstream_connect_time": _r(ex.connect_time),
            "upstream_first_byte_time": _r(ex.first_byte),
            "bytes_in": ex.head_size + ex.body_in, "bytes_out": ex.bytes_out,
            "client_addr": conn.client_ip, "request_id": (ex.rid or b"").decode("latin-1"),
            "retries": ex.retries,
            "tls_version": tls.get("tls_version") if tls else None,
            "sni": tls.get("sni") if tls else None,
        }

    def capture_for(self, ex: Any, route: Any) -> dict | None:
        """Arm capture on this exchange if a session wants its route (and request id)."""
        now = time.monotonic()
        rid = (ex.rid or b"").decode("latin-1")
        # a session waiting for this very request (a synthetic test) before general ones
        for s in sorted(self.captures.values(), key=lambda s: s.request_id is None):
            if s.route != route.id or s.remaining <= 0 or s.deadline <= now:
                continue
            if s.request_id is not None and rid != s.request_id:
                continue
            s.remaining -= 1
            conn = ex.conn
            server = conn.server
            return {
                "session": s.id, "time": _now_iso(), "node": self.node, "pid": self.pid,
                "route_id": route.id, "route": route.name, "tenant": route.tenant,
                "listener": server.scheme.decode(), "client_addr": conn.client_ip,
                "client_trusted": bool(conn.trusted),
                "trusted_proxies": [str(n) for n in server.trusted],
                "request_id": (ex.rid or b"").decode("latin-1"),
                "client_request": {
                    "line": redact_request_line((ex.method + b" " + ex.url).decode("latin-1"))[:4096]
                            + (" HTTP/1.0" if ex.http10 else " HTTP/1.1"),
                    "headers": _headers(ex.headers)},
                "upstream_request": None, "upstream_response": None, "client_response": None,
                "attempts": 0,
            }
        return None

    def capture_done(self, ex: Any, status: int, code: str, duration: float) -> None:
        rec = ex.cap
        ex.cap = None
        t = ex.target
        ptype, reason = logged_as(code)
        reason = getattr(ex, "detail", None) or reason
        rec.update({
            "status": status, "proxy_status": ptype, "reason": reason,
            "target": t.addr if t is not None else None, "retries": ex.retries,
            "timings": {"total": round(duration, 6), "upstream_connect": _r(ex.connect_time),
                        "upstream_first_byte": _r(ex.first_byte)},
        })
        rec["notes"] = capture_notes(rec)
        if len(self.records) < MAX_PENDING_RECORDS:
            self.records.append(rec)
        s = self.captures.get(rec["session"])
        if s is not None and s.remaining <= 0:
            del self.captures[rec["session"]]
            self._flags()

    # ---- output
    def drain(self) -> list[dict]:
        """Messages for the control plane: ``tail.lines`` per session with something
        new (lines or drops) and ``capture.record`` per finished capture."""
        self.sweep()
        out = []
        for s in self.tails.values():
            if not s.lines and not s.dropped:
                continue
            lines, s.lines = s.lines, []
            dropped, s.dropped = s.dropped, 0
            for i in range(0, max(len(lines), 1), TAIL_BATCH):
                out.append({"type": schema.MSG_TAIL_LINES, "id": s.id,
                            "lines": lines[i:i + TAIL_BATCH], "dropped": dropped if i == 0 else 0})
        records, self.records = self.records, []
        for r in records:
            out.append({"type": schema.MSG_CAPTURE_RECORD, "id": r["session"], "record": r})
        return out


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 6)


def capture_notes(rec: dict) -> list[str]:
    """Plain-language observations on a capture (what an engineer would spot)."""
    notes = []
    client = {n.lower(): v for n, v in rec["client_request"]["headers"]}
    up = {n.lower(): v for n, v in ((rec.get("upstream_request") or {}).get("headers") or [])}
    for h in ("x-forwarded-for", "x-real-ip", "x-forwarded-proto", "forwarded"):
        if h in client and not rec["client_trusted"]:
            sent = up.get(h)
            notes.append(
                f"{h} {client[h]!r} from {rec['client_addr']} was replaced"
                + (f" by {sent!r}" if sent else "")
                + f": the peer is not in trusted_proxies "
                  f"({', '.join(rec['trusted_proxies']) or 'empty'}). If a load balancer at "
                  f"{rec['client_addr']} sits in front, add its network to --trusted-proxies.")
    if "upgrade" in client and rec.get("reason") == "websocket_denied":
        notes.append("the client asked for a WebSocket upgrade but the route does not allow "
                     "WebSocket (route option 'websocket' is off)")
    reason = rec.get("reason") or ""
    if reason == "forward_auth_denied":
        notes.append(f"the route's forward auth service answered {rec.get('status')}: that answer went to "
                     "the client as it was and nothing was forwarded (a client without a session is sent "
                     "to the login page this way)")
    elif reason.startswith("forward_auth_"):
        notes.append(f"the route's forward auth service could not be asked ({reason[13:]}): 503, nothing "
                     "was forwarded")
    elif reason == "rate limit":
        notes.append("the route's rate limit (or its tenant's) was exceeded: 429 with Retry-After, nothing "
                     "was forwarded; the limit holds across all nodes together")
    return notes


HUB = Hub()


# ---------------------------------------------------------------- the node side of commands

Sender = Callable[[dict], Awaitable[None]]


class NodeDiagnostics:
    """Answers the control plane's diagnostic commands for one node.

    ``send`` sends one JSON message on the current sync connection (dropped when none).
    ``relay`` (supervisor of ``--workers N``): a callable taking a hub command that
    forwards it to every worker instead of applying it to this process's hub.
    ``listeners``: ``{"http": "host:port", "https": "host:port" or ""}``, the node's
    own listeners (for ``tls.check`` and ``synthetic``).
    """

    def __init__(self, send: Sender, hub: Hub = HUB, node_name: str = "",
                 listeners: dict | None = None, relay: Callable[[dict], None] | None = None):
        self.send = send
        self.hub = hub
        hub.node = node_name or hub.node
        self.listeners = dict(listeners or {})
        self.relay = relay
        self.inbox: list[dict] = []          # messages relayed from workers
        self.tasks: set[asyncio.Task] = set()
        self.waiters: dict[str, asyncio.Future] = {}   # synthetic: capture id -> record
        self.slots = asyncio.Semaphore(PROBE_CONCURRENCY)
        self.sent_records: dict[str, int] = {}       # capture id -> records forwarded
        self.stats = {"tail_lines": 0, "tail_dropped": 0, "probes": 0, "captures": 0}

    # ---- dispatch (from SyncClient._on_text)
    def handle(self, msg: dict) -> bool:
        kind = msg.get("type")
        if kind in (schema.MSG_TAIL_START, schema.MSG_TAIL_STOP, schema.MSG_CAPTURE_START,
                    schema.MSG_CAPTURE_STOP):
            self.command(msg)
            return True
        if kind == schema.MSG_PROBE:
            self.spawn(self.run_probe(msg))
            return True
        if kind == schema.MSG_TLS_CHECK:
            self.spawn(self.run_tls_check(msg))
            return True
        if kind == schema.MSG_SYNTHETIC:
            self.spawn(self.run_synthetic(msg))
            return True
        return False

    def command(self, msg: dict) -> None:
        if msg.get("type") == schema.MSG_CAPTURE_START:
            self.sent_records.pop(str(msg.get("id")), None)
        if self.relay is not None:
            self.relay(msg)
        else:
            self.hub.command(msg)

    def spawn(self, coro: Awaitable) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def ingest(self, messages: list) -> None:
        """Output of a worker's hub (``--workers N``)."""
        if isinstance(messages, list):
            self.inbox.extend(m for m in messages[:2000] if isinstance(m, dict))

    # ---- periodic drain
    def collect(self) -> list[dict]:
        msgs = self.inbox
        self.inbox = []
        if self.relay is None:
            msgs = msgs + self.hub.drain()
        out = []
        for m in msgs:
            if m.get("type") == schema.MSG_CAPTURE_RECORD:
                rec = m.get("record") or {}
                cid = str(m.get("id"))
                fut = self.waiters.get(cid)
                if fut is not None and not fut.done():
                    fut.set_result(rec)
                self.stats["captures"] += 1
            elif m.get("type") == schema.MSG_TAIL_LINES:
                self.stats["tail_lines"] += len(m.get("lines") or ())
                self.stats["tail_dropped"] += int(m.get("dropped") or 0)
            out.append(m)
        return out

    async def run(self) -> None:
        """Drain the hub into messages while a sync connection is up."""
        while True:
            await asyncio.sleep(DRAIN_SECONDS)
            try:
                for m in self.collect():
                    await self.send(m)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - diagnostics never end the sync loop
                log.info("diagnostics: sending failed: %s", exc)

    def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()

    # ---- commands that answer
    async def run_probe(self, msg: dict) -> None:
        rid = msg.get("id")
        async with self.slots:
            try:
                result = await probe(
                    str(msg.get("url") or ""), timeout=_num(msg.get("timeout"), 5.0),
                    policy=msg.get("policy"), ca_pem=str(msg.get("ca_pem") or ""),
                    sni=str(msg.get("sni") or ""), insecure=bool(msg.get("insecure")),
                    method=str(msg.get("method") or "GET")[:16],
                    host_header=str(msg.get("host_header") or "")[:300])
            except Exception as exc:  # a bug must still answer
                log.exception("diagnostics: probe failed")
                result = {"ok": False, "error": f"probe failed on the node: {exc!r}",
                          "failed_step": "node"}
        self.stats["probes"] += 1
        result["node"] = self.hub.node
        await self.send({"type": schema.MSG_PROBE_RESULT, "id": rid, "result": result})

    async def run_tls_check(self, msg: dict) -> None:
        rid = msg.get("id")
        sni = str(msg.get("sni") or "")[:253]
        https = self.listeners.get("https") or ""
        if not https or https == "off":
            result = {"ok": False, "failed_step": "node", "error": "this node has no HTTPS listener"}
        else:
            addr = _connectable(https)
            async with self.slots:
                result = await probe(f"https://{addr}/", timeout=_num(msg.get("timeout"), 5.0),
                                     sni=sni, insecure=True, host_header=sni or addr)
            result["listener"] = https
        result["node"] = self.hub.node
        result["sni"] = sni
        await self.send({"type": schema.MSG_PROBE_RESULT, "id": rid, "result": result})

    async def run_synthetic(self, msg: dict) -> None:
        """Send a request to this node's own HTTP listener with capture armed for it."""
        rid = str(msg.get("id") or "")[:64]
        route = msg.get("route")
        host = str(msg.get("host") or "")[:253]
        path = str(msg.get("path") or "/")
        if not path.startswith("/"):
            path = "/" + path
        request_id = "syn-" + rid
        headers = [[str(k)[:100], str(v)[:2000]] for k, v in (msg.get("headers") or [])
                   if isinstance(k, str) and str(k).lower() not in ("host", "x-request-id")][:30]
        headers.append(["X-Request-ID", request_id])
        listener = self.listeners.get("http") or ""
        capture_id = rid
        result: dict[str, Any] = {"node": self.hub.node, "capture": None}
        if not listener:
            result.update(ok=False, error="this node has no HTTP listener")
        else:
            fut = asyncio.get_running_loop().create_future()
            self.waiters[capture_id] = fut
            self.command({"type": schema.MSG_CAPTURE_START, "id": capture_id, "route": route,
                          "count": 1, "request_id": request_id, "expires": time.time() + 60})
            try:
                async with self.slots:
                    result["response"] = await probe(
                        f"http://{_connectable(listener)}{path}", host_header=host,
                        method=str(msg.get("method") or "GET")[:16],
                        headers=headers, timeout=_num(msg.get("timeout"), 10.0))
                try:
                    result["capture"] = await asyncio.wait_for(asyncio.shield(fut), 2.0)
                except asyncio.TimeoutError:
                    result["capture"] = None
                    result["note"] = ("the request did not reach the route (wrong host or path, "
                                      "or another route matched): nothing was captured")
            finally:
                self.waiters.pop(capture_id, None)
                self.command({"type": schema.MSG_CAPTURE_STOP, "id": capture_id})
            result["ok"] = bool(result["response"].get("ok"))
        await self.send({"type": schema.MSG_SYNTHETIC_RESULT, "id": rid, "result": result})


def _num(v: Any, default: float) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 120:
        return float(v)
    return default


def _connectable(addr: str) -> str:
    """A listener address one can connect to (0.0.0.0 / :: → loopback)."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
