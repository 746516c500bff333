"""end to end: real Daphne, a real node (``python -m dataplane``), real
backends; every scenario driven through /api/v1/diagnostics/ the way an engineer would.

Scenarios: target port closed (connection_refused + the probe says refused), backend
slower than the read timeout (http_response_timeout, upstream latency ~ total), a
certificate without its intermediate (the TLS check names it), client IP lost because
trusted_proxies is wrong (the inspector shows the replaced header), WebSocket on a route
without it (the refused upgrade in the live tail), a node rejecting a config (NACK errors
on the node status). What each call returned is printed (run with -s to see it).
"""
from __future__ import annotations

import asyncio
import http.client
import json
import threading

import pytest
import trustme

from tests.e2e.harness import Node, free_port, wait_until

pytestmark = pytest.mark.e2e


def show(title: str, data) -> None:
    print(f"\n===== {title}\n{json.dumps(data, indent=2, default=str)[:6000]}")


class Api:
    def __init__(self, port: int, token: str):
        self.port, self.token = port, token

    def call(self, method: str, path: str, body=None, timeout: float = 60.0):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Authorization": f"Bearer {self.token}", "Host": "127.0.0.1"}
            data = None
            if body is not None:
                data = json.dumps(body)
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read().decode()
            return resp.status, (json.loads(raw) if raw else None)
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body or {}, **kw)

    def ok(self, method, path, body=None, status=200):
        code, data = self.call(method, path, body)
        assert code == status, (path, code, data)
        return data


class TailReader(threading.Thread):
    """GET /api/v1/diagnostics/tail/?output=jsonl in a thread; collects the events."""

    def __init__(self, api: Api, query: str):
        super().__init__(daemon=True)
        self.api, self.query = api, query
        self.events: list[dict] = []
        self.status = None
        self.content_type = None

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.api.port, timeout=60)
        conn.request("GET", f"/api/v1/diagnostics/tail/?output=jsonl&{self.query}",
                     headers={"Authorization": f"Bearer {self.api.token}", "Host": "127.0.0.1"})
        resp = conn.getresponse()
        self.status, self.content_type = resp.status, resp.getheader("Content-Type")
        while True:
            line = resp.readline()
            if not line:
                break
            if line.strip():
                self.events.append(json.loads(line))
        conn.close()

    def lines(self):
        return [e["data"] for e in self.events if e["event"] == "line"]


class SlowBackend:
    """/slow sleeps 1.5 s (past a 0.5 s read timeout), /semi 0.3 s, anything else at once."""

    def __init__(self):
        self.port = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready):
        from aiohttp import web

        async def handle(request):
            await asyncio.sleep({"/slow": 1.5, "/semi": 0.3}.get(request.path, 0))
            return web.Response(text="upstream=slow\n")

        async def start():
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]

        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(start())
        ready.set()
        self.loop.run_forever()

    def close(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


class DiagNode(Node):
    """A node with extra flags: fast traffic reports and a (wrong) trusted_proxies."""

    extra: list = []

    def argv(self):
        return super().argv() + self.extra


def shell(cp, code: str) -> dict:
    out = cp.manage("shell", "-c", code).stdout.strip().splitlines()
    return json.loads(out[-1])


def raw_request(port: int, host: str, path: str = "/", headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def test_diagnostics_scenarios(make_stack):
    stack = make_stack()
    stack.start_control_plane()
    cp = stack.cp
    tag = stack.tag
    token = shell(cp, (
        "import json\nfrom django.contrib.auth import get_user_model\n"
        "from controlplane.tenancy.models import ApiToken\n"
        "u, _ = get_user_model().objects.get_or_create(username='diag-staff')\n"
        "u.is_staff = True; u.save()\n"
        "row, plain = ApiToken.issue(u, name='e2e diagnostics')\n"
        "print(json.dumps({'token': plain}))"))["token"]
    api = Api(stack.cp_port, token)

    # ---- the sites
    base = stack.add_upstream("base")
    site = stack.create_site("base", base)
    closed = free_port()
    refused_host = f"refused-{tag}.e2e.test"
    cp.call("create_site", name=f"refused-{tag}", host=refused_host, port=closed)
    slow = SlowBackend()
    slow_host = f"slow-{tag}.e2e.test"
    cp.call("create_site", name=f"slow-{tag}", host=slow_host, port=slow.port)
    shell(cp, (
        "import json\nfrom controlplane.proxy import services\nfrom controlplane.proxy.models import Pool\n"
        f"p = Pool.objects.get(name='pool-slow-{tag}')\n"
        "services.update_pool(services.Actor.system(), p, read_timeout=0.5, retries=0, note='e2e')\n"
        "print(json.dumps({'ok': True}))"))
    tls_host = f"tls-{tag}.e2e.test"
    cp.call("create_site", name=f"tls-{tag}", host=tls_host, port=base.port)
    ca = trustme.CA()
    intermediate = ca.create_child_ca()
    leaf = intermediate.issue_cert(tls_host)
    cp.call("upload_certificate", name=f"no-intermediate-{tag}",
            certificate_pem=leaf.cert_chain_pems[0].bytes().decode(),  # the leaf alone
            private_key_pem=leaf.private_key_pem.bytes().decode())

    # ---- the node: a load balancer at 127.0.0.1 sits in front, but trusted_proxies says 10/8
    DiagNode.extra = ["--stats-seconds", "1", "--trusted-proxies", "10.0.0.0/8", "--workers", "1"]
    name = f"e2e-{tag}-diag"
    node = DiagNode(stack, name, cp.call("register_node", name=name)["token"])
    stack.nodes.append(node)
    node.start()
    node.wait_served(site["host"], base.name, timeout=30)
    stack.wait_node_in_sync(node)

    routes = {r["name"]: r for r in api.ok("GET", "/api/v1/routes/?limit=500")["results"]}
    route_id = {k: routes[f"route-{k}-{tag}"]["id"] for k in ("base", "refused", "slow", "tls")}
    pools = {p["name"]: p for p in api.ok("GET", "/api/v1/pools/?limit=500")["results"]}
    refused_target = pools[f"pool-refused-{tag}"]["targets"][0]

    # ---- 1. node status
    nodes = api.ok("GET", "/api/v1/diagnostics/nodes/")["results"]
    status = next(n for n in nodes if n["name"] == name)
    show("node status", {k: status[k] for k in ("connected", "state", "in_sync", "applied", "current",
                                                "workers", "software_version", "uptime_seconds",
                                                "last_ack", "last_nack")})
    assert status["connected"] and status["in_sync"] and status["state"] == "in sync"
    assert status["workers"] == 1 and status["uptime_seconds"] is not None
    assert status["software_version"].startswith("switchyard-dataplane/")

    # ---- 2. websocket on a route without it -> the refused upgrade in the live tail
    reader = TailReader(api, f"route={route_id['base']}&proxy_status=http_request_denied"
                              f"&seconds=30&limit=1")
    reader.start()
    wait_until(lambda: any(e.get("event") == "hello" for e in reader.events), 15,
               "the tail to open", on_timeout=lambda: f"{reader.status} {reader.events}\n{stack.logs()}")

    def upgrade_seen():
        code, headers = raw_request(node.http_port, site["host"], "/chat",
                                    {"Upgrade": "websocket", "Connection": "Upgrade",
                                     "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                     "Sec-WebSocket-Version": "13"})
        assert code == 403 and "http_request_denied" in headers["proxy-status"]
        return reader.lines()
    wait_until(upgrade_seen, 15, "the refused upgrade in the tail", interval=0.3)
    reader.join(15)
    assert reader.status == 200 and reader.content_type == "application/x-ndjson"
    line = reader.lines()[0]
    show("tail (websocket on a route without it)", reader.events)
    assert line["status"] == 403 and line["proxy_status"] == "http_request_denied"
    assert line["reason"] == "websocket_denied" and line["path"] == "/chat"
    assert reader.events[-1]["event"] == "end"

    # ---- 3. target port closed -> connection_refused in why-502, the probe says refused
    for _ in range(5):
        assert raw_request(node.http_port, refused_host)[0] == 502
    probe = api.ok("POST", "/api/v1/diagnostics/probe/", {"target": refused_target["id"], "node": name})
    show("probe of the closed target", {"summary": probe["summary"], "tcp": probe["result"]["tcp"]})
    assert probe["result"]["failed_step"] == "tcp"
    assert probe["result"]["error"] == f"connection refused: nothing is listening on 127.0.0.1:{closed}"

    def refused_counted():
        data = api.ok("GET", f"/api/v1/diagnostics/routes/{route_id['refused']}/errors/?minutes=5")
        types = {e["type"]: e for e in data["errors_by_type"]}
        return data if types.get("connection_refused", {}).get("count", 0) >= 5 else None
    why, _ = wait_until(refused_counted, 30, "connection_refused in the why-502 breakdown", interval=0.5)
    top = why["errors_by_type"][0]
    show("why 502 (closed port)", {"requests": why["requests"], "error_rate": why["error_rate"],
                                   "top": top})
    assert top["type"] == "connection_refused" and top["status"] == 502
    assert top["links"]["probe"][0]["body"] == {"target": refused_target["id"]}
    assert top["links"]["tail"].endswith("proxy_status=connection_refused")

    # ---- 4. backend slower than the read timeout
    for _ in range(3):
        assert raw_request(node.http_port, slow_host, "/slow")[0] == 504
    for _ in range(6):
        assert raw_request(node.http_port, slow_host, "/semi")[0] == 200

    def slow_counted():
        data = api.ok("GET", f"/api/v1/diagnostics/routes/{route_id['slow']}/errors/?minutes=5")
        types = {e["type"]: e["count"] for e in data["errors_by_type"]}
        return data if types.get("http_response_timeout", 0) >= 3 and data["requests"] >= 9 else None
    why, _ = wait_until(slow_counted, 30, "http_response_timeout in the breakdown", interval=0.5)
    show("why 504 (slow backend)", {"errors_by_type": why["errors_by_type"], "latency": why["latency"]})
    assert why["errors_by_type"][0]["type"] == "http_response_timeout"
    lat = why["latency"]
    assert lat["upstream"]["p50"] >= 0.25 and lat["difference"]["p50"] < 0.1
    assert lat["verdict"].startswith("the backend is slow")
    node_why = api.ok("GET", f"/api/v1/diagnostics/nodes/{name}/errors/?minutes=5")
    assert {"connection_refused", "http_response_timeout"} <= {e["type"] for e in node_why["errors_by_type"]}

    # ---- 5. client IP lost: trusted_proxies is wrong -> the inspector shows the replaced header
    armed = api.ok("POST", f"/api/v1/diagnostics/routes/{route_id['base']}/capture/",
                   {"count": 2, "seconds": 120}, status=201)

    def captured():  # the capture.start may reach the node a moment after the API answered
        raw_request(node.http_port, site["host"], "/whoami",
                    {"X-Forwarded-For": "203.0.113.7", "Authorization": "Bearer very-secret",
                     "Cookie": "session=abc123"})
        data = api.ok("GET", f"/api/v1/diagnostics/captures/{armed['id']}/")
        return data if data["captured"] >= 1 else None
    cap, _ = wait_until(captured, 15, "the captured request", interval=0.3)
    rec = cap["requests"][0]
    show("request inspector (trusted_proxies wrong)",
         {k: rec[k] for k in ("client_request", "upstream_request", "client_response", "target",
                              "timings", "notes", "client_trusted")})
    client = dict(rec["client_request"]["headers"])
    upstream = dict(rec["upstream_request"]["headers"])
    assert client["X-Forwarded-For"] == "203.0.113.7" and upstream["X-Forwarded-For"] == "127.0.0.1"
    assert "trusted_proxies" in rec["notes"][0] and "10.0.0.0/8" in rec["notes"][0]
    assert "very-secret" not in json.dumps(rec) and "abc123" not in json.dumps(rec)
    synthetic = api.ok("POST", f"/api/v1/diagnostics/routes/{route_id['base']}/test-request/",
                       {"path": "/synthetic", "headers": {"X-Forwarded-For": "198.51.100.9"}, "node": name})
    show("synthetic test request", {"status": synthetic["response"]["http"]["status"],
                                    "upstream X-Forwarded-For": dict(
                                        synthetic["capture"]["upstream_request"]["headers"])["X-Forwarded-For"]})
    assert synthetic["ok"] and synthetic["capture"]["upstream_request"]["line"] == "GET /synthetic HTTP/1.1"

    # ---- 6. certificate without its intermediate -> the TLS check names it
    check = api.ok("POST", "/api/v1/diagnostics/tls-check/", {"sni": tls_host, "node": name})
    show("TLS check", {k: check[k] for k in ("handshake", "presented", "stored_certificate")}
         | {"report": {k: check["report"][k] for k in ("chain_status", "complete",
                                                       "missing_intermediate", "warnings")}})
    assert check["handshake"]["ok"] and check["handshake"]["version"] in ("TLSv1.2", "TLSv1.3")
    assert len(check["presented"]) == 1 and check["report"]["complete"] is False
    assert check["report"]["chain_status"] == "incomplete"
    assert "intermediate certificate issued to" in check["report"]["missing_intermediate"]
    assert check["stored_certificate"]["name"] == f"no-intermediate-{tag}"
    chain = api.ok("GET", f"/api/v1/diagnostics/certificates/{check['stored_certificate']['id']}/chain/")
    assert chain["missing_intermediate"] == check["report"]["missing_intermediate"]

    # ---- 7. a node rejecting a config -> NACK errors on the node status
    shell(cp, (
        "import copy, json\nfrom controlplane.publishing.models import ConfigVersion\n"
        "from dataplane import schema\n"
        "latest = ConfigVersion.objects.order_by('-number').first()\n"
        "snap = copy.deepcopy(latest.snapshot)\n"
        "snap['routes'].append({'id': 999999, 'name': 'broken', 'tenant': None,"
        " 'hosts': ['broken.e2e.test'], 'pool': 424242})\n"
        "ConfigVersion.objects.create(number=latest.number + 1, sha256=schema.snapshot_hash(snap),"
        " snapshot=snap, author='e2e', note='a snapshot the node refuses')\n"
        "print(json.dumps({'version': latest.number + 1}))"))

    def nacked():
        st = api.ok("GET", f"/api/v1/diagnostics/nodes/{name}/")
        return st if st["last_nack"] and st["last_nack"]["current"] else None
    st, _ = wait_until(nacked, 30, "the NACK on the node status", interval=0.3)
    show("node status after a rejected config", {k: st[k] for k in ("state", "in_sync", "applied",
                                                                     "current", "last_nack")})
    assert st["state"] == "rejected the current version" and not st["in_sync"]
    assert any(e["path"].endswith(".pool") and e["message"] == "unknown pool 424242"
               for e in st["last_nack"]["errors"])

    slow.close()


def test_tail_capture_and_synthetic_through_a_node_with_workers(make_stack):
    """--workers 2: the supervisor relays tail/capture commands to the workers and their
    lines and records back; probes run on the supervisor."""
    stack = make_stack()
    stack.start_control_plane()
    cp = stack.cp
    token = shell(cp, (
        "import json\nfrom django.contrib.auth import get_user_model\n"
        "from controlplane.tenancy.models import ApiToken\n"
        "u, _ = get_user_model().objects.get_or_create(username='diag-staff')\n"
        "u.is_staff = True; u.save()\n"
        "row, plain = ApiToken.issue(u, name='e2e diagnostics')\n"
        "print(json.dumps({'token': plain}))"))["token"]
    api = Api(stack.cp_port, token)
    base = stack.add_upstream("w")
    site = stack.create_site("w", base)
    DiagNode.extra = ["--workers", "2"]
    name = f"e2e-{stack.tag}-workers"
    node = DiagNode(stack, name, cp.call("register_node", name=name)["token"])
    stack.nodes.append(node)
    node.start()
    node.wait_served(site["host"], base.name, timeout=30)
    stack.wait_node_in_sync(node)
    rid = next(r["id"] for r in api.ok("GET", "/api/v1/routes/?limit=500")["results"]
               if r["name"] == f"route-w-{stack.tag}")
    assert api.ok("GET", f"/api/v1/diagnostics/nodes/{name}/")["workers"] == 2

    reader = TailReader(api, f"route={rid}&node={name}&seconds=30&limit=3")
    reader.start()
    wait_until(lambda: any(e.get("event") == "hello" for e in reader.events), 15, "the tail to open")

    def lines_seen():
        assert raw_request(node.http_port, site["host"], "/via-workers")[0] == 200
        return len(reader.lines()) >= 3
    wait_until(lines_seen, 20, "tail lines from the workers", interval=0.2)
    reader.join(15)
    pids = {ln["pid"] for ln in reader.lines()}
    show("tail through 2 workers", {"lines": len(reader.lines()), "worker pids": sorted(pids)})
    assert all(ln["path"] == "/via-workers" and ln["node"] == name for ln in reader.lines())

    synthetic = api.ok("POST", f"/api/v1/diagnostics/routes/{rid}/test-request/",
                       {"path": "/synthetic", "node": name})
    assert synthetic["ok"] and synthetic["capture"]["request_id"].startswith("syn-")
    probe = api.ok("POST", "/api/v1/diagnostics/probe/",
                   {"url": f"http://127.0.0.1:{base.port}/", "node": name})
    assert probe["result"]["ok"] and probe["result"]["http"]["status"] == 200
