"""end to end: access lists and the maintenance switch through real processes.

Daphne, a real node (``python -m dataplane``) listening dual-stack on ``[::]`` with
``--trusted-proxies ::1/128``, a real backend. The access list is created and attached
through /api/v1/; requests come from 127.0.0.1 (an untrusted client) and from ::1
(the trusted proxy), so the IPv6 rules, a spoofed X-Forwarded-For and a trusted one
are all checked on the wire.
"""
from __future__ import annotations

import http.client
import json

import pytest

from tests.e2e.harness import Node, wait_until

pytestmark = pytest.mark.e2e


class DualStackNode(Node):
    """Plain HTTP on [::] (IPv4 clients arrive as ::ffff:127.0.0.1), ::1 trusted."""

    def argv(self):
        argv = super().argv()
        argv[argv.index("--http") + 1] = f"[::]:{self.http_port}"
        return argv + ["--trusted-proxies", "::1/128"]


def request(port: int, host: str, source: str = "127.0.0.1", headers: dict | None = None,
            path: str = "/") -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection(source, port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


class Api:
    def __init__(self, port: int, token: str):
        self.port, self.token = port, token

    def call(self, method: str, path: str, body=None) -> tuple[int, dict | None]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            headers = {"Authorization": f"Bearer {self.token}", "Host": "127.0.0.1",
                       "Content-Type": "application/json", "X-Change-Note": "e2e access lists"}
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            resp = conn.getresponse()
            raw = resp.read().decode()
            return resp.status, (json.loads(raw) if raw else None)
        finally:
            conn.close()

    def ok(self, method: str, path: str, body=None, status: int = 200) -> dict:
        code, data = self.call(method, path, body)
        assert code == status, (method, path, code, data)
        return data


def staff_token(cp) -> str:
    out = cp.manage("shell", "-c", (
        "import json\nfrom django.contrib.auth import get_user_model\n"
        "from controlplane.tenancy.models import ApiToken\n"
        "u, _ = get_user_model().objects.get_or_create(username='acl-staff')\n"
        "u.is_staff = True; u.save()\n"
        "row, plain = ApiToken.issue(u, name='e2e access lists')\n"
        "print(json.dumps({'token': plain}))")).stdout.strip().splitlines()
    return json.loads(out[-1])["token"]


def test_access_lists_and_maintenance_on_a_real_node(make_stack):
    stack = make_stack()
    stack.start_control_plane()
    upstream = stack.add_upstream("acl")
    site = stack.create_site("acl", upstream)
    host = site["host"]
    name = f"e2e-{stack.tag}-acl"
    node = DualStackNode(stack, name, stack.cp.call("register_node", name=name)["token"])
    stack.nodes.append(node)
    node.start()
    node.wait_served(host, upstream.name, timeout=30)
    port = node.http_port
    api = Api(stack.cp_port, staff_token(stack.cp))
    [route] = api.ok("GET", f"/api/v1/routes/?host={host}")["results"]
    assert request(port, host, "::1")[0] == 200  # the node answers on IPv6 too

    # ---- an IPv6 rule: ::1 is denied, 127.0.0.1 (no rule matches) gets the default
    acl = api.ok("POST", "/api/v1/access-lists/", {
        "name": "office", "default": "allow", "rules": [{"action": "deny", "cidr": "::1/128"}]}, status=201)
    api.ok("PATCH", f"/api/v1/routes/{route['id']}/", {"access_list": acl["id"]})
    wait_until(lambda: request(port, host, "::1")[0] == 403, 30, "the access list on the node",
               interval=0.1, on_timeout=stack.logs)
    status, headers, body = request(port, host, "::1")
    assert headers["proxy-status"] == 'switchyard; error=http_request_denied; details="access list office"'
    assert headers["x-request-id"] and "access list office" in body
    assert request(port, host, "127.0.0.1")[0] == 200

    # ---- only 203.0.113.7 may come in: a spoofed X-Forwarded-For from an untrusted
    # client does not help; the same header from the trusted proxy (::1) does
    api.ok("PATCH", f"/api/v1/access-lists/{acl['id']}/", {
        "default": "deny", "rules": [{"action": "allow", "cidr": "203.0.113.7/32"}]})
    wait_until(lambda: request(port, host, "127.0.0.1")[0] == 403, 30, "the new rules on the node",
               interval=0.1, on_timeout=stack.logs)
    spoofed = request(port, host, "127.0.0.1", {"X-Forwarded-For": "203.0.113.7"})
    assert spoofed[0] == 403 and 'details="access list office"' in spoofed[1]["proxy-status"]
    via_proxy = request(port, host, "::1", {"X-Forwarded-For": "203.0.113.7"})
    assert via_proxy[0] == 200 and f"upstream={upstream.name}" in via_proxy[2]
    sent = json.loads(via_proxy[2].splitlines()[1])["headers"]
    assert sent["X-Forwarded-For"] == "203.0.113.7, ::1"
    # the rightmost address the trusted proxy did not add itself decides
    assert request(port, host, "::1", {"X-Forwarded-For": "203.0.113.7, 198.51.100.1"})[0] == 403
    assert request(port, host, "::1")[0] == 403  # the proxy itself is no allowed client

    # the node's access log names the access list that refused
    def logged():
        lines = [json.loads(x) for x in (node.dir / "node.log").read_text().splitlines() if x.startswith("{")]
        return [x for x in lines if x.get("reason") == "access list office"]
    denied = wait_until(logged, 15, "the refusal in the access log")[0]
    assert denied[-1]["status"] == 403 and denied[-1]["proxy_status"] == "http_request_denied"

    # ---- the maintenance switch: 503 + Retry-After, the pool is never touched
    api.ok("PATCH", f"/api/v1/routes/{route['id']}/", {"access_list": None, "maintenance": True,
                                                      "retry_after": 120})
    wait_until(lambda: request(port, host)[0] == 503, 30, "maintenance on the node", interval=0.1,
               on_timeout=stack.logs)
    upstream.close()  # a request sent to the pool would now be a 502
    status, headers, body = request(port, host, "127.0.0.1", {"Accept": "text/html"})
    assert status == 503 and headers["retry-after"] == "120"
    assert headers["proxy-status"] == 'switchyard; error=destination_unavailable; details="maintenance"'
    assert headers["content-type"].startswith("text/html") and "maintenance" in body.lower()
    status, headers, body = request(port, host, "::1", {"Accept": "application/json"})
    assert status == 503 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == "maintenance" and headers["retry-after"] == "120"
