"""end to end: basic auth on an access list through real processes (both modes).

Daphne, a real node (``python -m dataplane``) and a real upstream that echoes the
headers it received. The list and its users are created through /api/v1/ (passwords
write-only); the node verifies off its event loop, caches the verified header, throttles
failures per client address, and removes Authorization before forwarding. The number of
hashes the node computed is read from its /metrics (switchyard_basic_auth_checks).
"""
from __future__ import annotations

import base64
import http.client
import json
import re

import pytest

from tests.e2e.harness import wait_until
from tests.e2e.test_access_lists import Api, request, staff_token

pytestmark = pytest.mark.e2e


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def checks(node) -> dict[str, float]:
    """The node's basic-auth counters: {result: count}."""
    text = node.admin("/metrics").body
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^switchyard_basic_auth_checks_total\{result="(\w+)"\} (\S+)$', text, re.M)}


def keep_alive(port: int, host: str, headers: dict, n: int) -> list[tuple[int, str]]:
    """``n`` requests on one connection, as a browser sends them: the same header each time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    try:
        for _ in range(n):
            conn.request("GET", "/", headers={"Host": host, **headers})
            resp = conn.getresponse()
            out.append((resp.status, resp.read().decode("utf-8", "replace")))
    finally:
        conn.close()
    return out


def test_basic_auth_on_a_real_node(make_stack):
    stack = make_stack()
    stack.start_control_plane()
    upstream = stack.add_upstream("auth")
    site = stack.create_site("auth", upstream)
    host = site["host"]
    node = stack.add_node()
    node.wait_served(host, upstream.name, timeout=30)
    port = node.http_port
    api = Api(stack.cp_port, staff_token(stack.cp))
    [route] = api.ok("GET", f"/api/v1/routes/?host={host}")["results"]

    # a list with users only (no CIDR rules, default allow): basic auth alone
    acl = api.ok("POST", "/api/v1/access-lists/", {
        "name": "Staff only", "users": [{"username": "alice", "password": "correct horse"}]}, status=201)
    assert acl["users"] == [{"username": "alice"}]
    api.ok("PATCH", f"/api/v1/routes/{route['id']}/", {"access_list": acl["id"]})
    wait_until(lambda: request(port, host)[0] == 401, 30, "basic auth on the node", interval=0.1,
               on_timeout=stack.logs)

    # no header -> 401 with the challenge and a Proxy-Status naming the list
    status, headers, body = request(port, host)
    assert headers["www-authenticate"] == 'Basic realm="Staff only", charset="UTF-8"'
    assert headers["proxy-status"] == 'switchyard; error=http_request_denied; details="basic auth Staff only"'
    assert f"upstream={upstream.name}" not in body

    # the right password -> 200, and the upstream never sees the Authorization header; the
    # browser's repeated header is verified once (one hash), then a dictionary lookup
    before = checks(node)
    answers = keep_alive(port, host, basic("alice", "correct horse"), 20)
    assert [s for s, _ in answers] == [200] * 20
    sent = json.loads(answers[0][1].splitlines()[1])["headers"]
    assert "Authorization" not in sent and "authorization" not in {k.lower() for k in sent}
    after = checks(node)
    assert after.get("ok", 0) - before.get("ok", 0) == 1  # one PBKDF2 computation for 20 requests
    assert after.get("cached", 0) - before.get("cached", 0) == 20  # the first resumes through it too

    # wrong passwords -> 401, then the client is throttled: 429 with Retry-After, no hash
    for i in range(5):
        assert request(port, host, headers=basic("alice", f"guess {i}"))[0] == 401
    hashed = checks(node).get("failed", 0)
    status, headers, _ = request(port, host, headers=basic("alice", "guess 6"))
    assert status == 429 and int(headers["retry-after"]) > 0
    assert 'details="basic auth Staff only: too many failed attempts"' in headers["proxy-status"]
    assert checks(node).get("failed", 0) == hashed and checks(node).get("throttled", 0) >= 1
    # a header verified before still passes (a lookup, no hash)
    assert request(port, host, headers=basic("alice", "correct horse"))[0] == 200

    # the node's access log names the refusal like an access list's
    def logged():
        lines = [json.loads(x) for x in (node.dir / "node.log").read_text().splitlines() if x.startswith("{")]
        found = [x for x in lines if (x.get("reason") or "").startswith("basic auth Staff only")]
        return found if {x["status"] for x in found} >= {401, 429} else None
    refused = wait_until(logged, 30, "the 401 and 429 in the access log")[0]
    assert "basic auth Staff only throttled" in {x["reason"] for x in refused}
    assert {x["proxy_status"] for x in refused} == {"http_request_denied"}

    # `manage.py checkconfig` (a subprocess, as the README runs it) checks the stored hashes too
    out = stack.cp.manage("checkconfig", "--schema-only").stdout
    assert "access lists)" in out and "ERROR" not in out

    # forward_authorization on the route: the upstream gets the header
    api.ok("PATCH", f"/api/v1/routes/{route['id']}/", {"forward_authorization": True})

    def forwarded():
        status, _, body = request(port, host, headers=basic("alice", "correct horse"))
        return status == 200 and "Authorization" in json.loads(body.splitlines()[1])["headers"]
    wait_until(forwarded, 30, "forward_authorization on the node", interval=0.2, on_timeout=stack.logs)
