"""end to end: forward auth through real processes.

Daphne, a real node (``python -m dataplane``), a recording upstream, and two auth
services run as their own processes on loopback (tests/e2e/auth_service.py): a portal
that sets a cookie and redirects to its login page until the client has a session, then
answers 200 with Remote-User; and one that hangs. Forward auth is set through /api/v1/.
"""
from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.harness import wait_until
from tests.e2e.test_access_lists import Api, staff_token

pytestmark = pytest.mark.e2e

SERVICE = Path(__file__).with_name("auth_service.py")


class RecordingUpstream:
    """An HTTP/1.1 upstream on loopback that records every request it gets."""

    def __init__(self, name: str):
        self.name = name
        self.requests: list[dict] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self):
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else b""
                upstream.requests.append({"method": self.command, "path": self.path, "body": body.decode(),
                                          "headers": [[k, v] for k, v in self.headers.items()]})
                out = f"upstream={upstream.name}\n{json.dumps(dict(self.headers.items()))}\n".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class AuthService:
    def __init__(self, mode: str, log: Path):
        self.log = log
        self.proc = subprocess.Popen([sys.executable, str(SERVICE), mode, "--log", str(log)],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        assert line.startswith("port="), line
        self.port = int(line[5:])

    def requests(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(x) for x in self.log.read_text().splitlines() if x.strip()]

    def stop(self):
        self.proc.kill()
        self.proc.wait(10)


def request(port: int, host: str, method: str = "GET", path: str = "/", headers: dict | None = None,
            body: bytes | None = None) -> tuple[int, http.client.HTTPMessage, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def test_forward_auth_on_a_real_node(make_stack, tmp_path):
    stack = make_stack()
    stack.start_control_plane()
    upstream = RecordingUpstream(f"fauth-{stack.tag}")
    portal = AuthService("portal", tmp_path / "portal.log")
    hang = AuthService("hang", tmp_path / "hang.log")
    try:
        site = stack.create_site("fauth", upstream)
        host = site["host"]
        node = stack.add_node()
        node.wait_served(host, upstream.name, timeout=30)
        port = node.http_port
        api = Api(stack.cp_port, staff_token(stack.cp))
        [route] = api.ok("GET", f"/api/v1/routes/?host={host}")["results"]
        url = f"http://127.0.0.1:{portal.port}/api/authz/forward-auth"
        body = api.ok("PATCH", f"/api/v1/routes/{route['id']}/", {"forward_auth": {
            "url": url, "response_headers": ["Remote-User", "Remote-Groups"]}})
        assert body["forward_auth"] == {"url": url, "response_headers": ["Remote-User", "Remote-Groups"],
                                        "timeout": 5.0}
        wait_until(lambda: request(port, host)[0] == 302, 30, "forward auth on the node", interval=0.1,
                   on_timeout=stack.logs)

        # ---- no session: the portal's 302 and cookie reach the client, the upstream sees nothing
        seen = len(upstream.requests)
        status, headers, text = request(port, host, path="/secret?x=1",
                                        headers={"Remote-User": "mallory", "Authorization": "Bearer t0k"})
        assert status == 302
        assert headers["Location"] == f"https://login.example.test/?rd=http://{host}/secret?x=1"
        assert headers["Set-Cookie"] == "auth_flow=started; Path=/; HttpOnly"
        assert "Sign in" in text and headers["X-Request-ID"]
        assert len(upstream.requests) == seen
        asked = {k.lower(): v for k, v in portal.requests()[-1]["headers"]}
        assert portal.requests()[-1]["path"] == "/api/authz/forward-auth"
        assert (asked["x-forwarded-method"], asked["x-forwarded-proto"], asked["x-forwarded-host"],
                asked["x-forwarded-uri"], asked["x-forwarded-for"]) == ("GET", "http", host, "/secret?x=1",
                                                                        "127.0.0.1")
        assert asked["authorization"] == "Bearer t0k" and "remote-user" not in asked

        # ---- with the session: forwarded, with the portal's user, not the client's forged one
        status, _, text = request(port, host, "POST", "/api/items", {
            "Cookie": "session=alice", "Remote-User": "mallory", "Remote-Groups": "root",
            "Content-Type": "application/json"}, b'{"item": 1}')
        assert status == 200 and f"upstream={upstream.name}" in text
        got = upstream.requests[-1]
        sent = {k.lower(): v for k, v in got["headers"]}
        assert sent["remote-user"] == "alice" and sent["remote-groups"] == "admins,dev"
        assert [k for k, _ in got["headers"] if k.lower() == "remote-user"] == ["Remote-User"]  # one copy
        assert got["body"] == '{"item": 1}' and got["method"] == "POST"
        assert portal.requests()[-1]["method"] == "GET"  # the subrequest never carries the body

        # ---- an auth service that hangs: 503 with Proxy-Status after the timeout, nothing forwarded
        api.ok("PATCH", f"/api/v1/routes/{route['id']}/", {"forward_auth": {
            "url": f"http://127.0.0.1:{hang.port}/oauth2/auth", "response_headers": ["Remote-User"],
            "timeout": 1}})
        wait_until(lambda: request(port, host, headers={"Cookie": "session=alice"})[0] == 503, 30,
                   "the hanging auth service on the node", interval=0.1, on_timeout=stack.logs)
        seen = len(upstream.requests)
        status, headers, text = request(port, host, "POST", "/api/items", {"Cookie": "session=alice"}, b"x" * 100)
        assert status == 503
        assert headers["Proxy-Status"] == 'switchyard; error=http_response_timeout; details="forward auth"'
        assert "forward auth" in text
        assert len(upstream.requests) == seen

        # the node's access log says which policy answered
        def logged():
            lines = [json.loads(x) for x in (node.dir / "node.log").read_text().splitlines() if x.startswith("{")]
            denied = [x for x in lines if x.get("reason") == "forward_auth_denied"]
            failed = [x for x in lines if x.get("reason") == "forward_auth_http_response_timeout"]
            return (denied, failed) if denied and failed else None
        (denied, failed), _ = wait_until(logged, 15, "the forward auth answers in the access log")
        assert denied[-1]["status"] == 302 and denied[-1]["proxy_status"] == "http_request_denied"
        assert failed[-1]["status"] == 503 and failed[-1]["proxy_status"] == "http_response_timeout"

        # "why 4xx/5xx" (the node's traffic reports): the refusals and the 503s by forward auth
        def counted():
            data = api.ok("GET", f"/api/v1/diagnostics/routes/{route['id']}/errors/?minutes=5")
            types = {e["type"]: e for e in data["errors_by_type"]}
            if "http_request_denied" in types and "http_response_timeout" in types:
                return types
            return None
        types, _ = wait_until(counted, 60, "the forward auth answers in why 4xx/5xx", interval=0.5,
                              on_timeout=stack.logs)
        now = f"http://127.0.0.1:{hang.port}/oauth2/auth"  # the route's forward auth as it is now
        assert types["http_request_denied"]["policy"]["forward_auth"] == now
        assert "forward_auth_denied" in types["http_request_denied"]["check"]
        timeouts = types["http_response_timeout"]
        assert timeouts["policy"] == {"forward_auth": now, "timeout": 1}
        assert "forward auth" in timeouts["check"]
    finally:
        portal.stop()
        hang.stop()
        upstream.close()
