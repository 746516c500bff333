"""end to end: the route field basic_auth through real processes (both modes).

Daphne, a real node (``python -m dataplane``) and a real upstream that echoes the headers
it received. The route's users are set through /api/v1/routes/ (passwords write-only);
the node asks for them (401 with the route's realm), removes Authorization before
forwarding, and with an access list attached checks the list's users as well.
"""
from __future__ import annotations

import json

import pytest

from tests.e2e.harness import wait_until
from tests.e2e.test_access_lists import Api, request, staff_token
from tests.e2e.test_basic_auth import basic

pytestmark = pytest.mark.e2e


def upstream_headers(body: str) -> dict:
    return json.loads(body.splitlines()[1])["headers"]


def test_route_basic_auth_on_a_real_node(make_stack):
    stack = make_stack()
    stack.start_control_plane()
    upstream = stack.add_upstream("rba")
    site = stack.create_site("rba", upstream)
    host = site["host"]
    node = stack.add_node()
    node.wait_served(host, upstream.name, timeout=30)
    port = node.http_port
    api = Api(stack.cp_port, staff_token(stack.cp))
    [route] = api.ok("GET", f"/api/v1/routes/?host={host}")["results"]

    # basic auth on the route alone (no access list); the realm defaults to the route's name
    got = api.ok("PATCH", f"/api/v1/routes/{route['id']}/", {"basic_auth": {"users": [
        {"username": "alice", "password": "correct horse"}, {"username": "bob", "password": "route only"}]}})
    assert got["basic_auth"] == {"realm": route["name"], "users": [{"username": "alice"}, {"username": "bob"}]}
    wait_until(lambda: request(port, host)[0] == 401, 30, "route basic auth on the node", interval=0.1,
               on_timeout=stack.logs)

    # no header -> 401 with the route's realm; the upstream is not reached
    status, headers, body = request(port, host)
    assert status == 401
    assert headers["www-authenticate"] == f'Basic realm="{route["name"]}", charset="UTF-8"'
    assert headers["proxy-status"] == (
        f'switchyard; error=http_request_denied; details="basic auth {route["name"]}"')
    assert f"upstream={upstream.name}" not in body
    # a wrong password -> 401
    assert request(port, host, headers=basic("alice", "wrong"))[0] == 401

    # the right password -> 200, and the upstream never sees the Authorization header
    status, _, body = request(port, host, headers=basic("alice", "correct horse"))
    assert status == 200, body
    assert "authorization" not in {k.lower() for k in upstream_headers(body)}

    # a realm of its own
    api.ok("PATCH", f"/api/v1/routes/{route['id']}/", {"basic_auth": {"realm": "Team area", "users": [
        {"username": "alice"}, {"username": "bob"}]}})
    wait_until(lambda: request(port, host)[1].get("www-authenticate") == 'Basic realm="Team area", charset="UTF-8"',
               30, "the new realm on the node", interval=0.1, on_timeout=stack.logs)
    # the stored hashes were kept: the same passwords still work
    assert request(port, host, headers=basic("bob", "route only"))[0] == 200

    # with an access list that has users too: the one Authorization must pass both
    acl = api.ok("POST", "/api/v1/access-lists/", {
        "name": "Office", "users": [{"username": "alice", "password": "correct horse"},
                                    {"username": "carol", "password": "list only"}]}, status=201)
    api.ok("PATCH", f"/api/v1/routes/{route['id']}/", {"access_list": acl["id"]})
    # bob is only the route's user: the list refuses him (its realm)
    wait_until(lambda: request(port, host, headers=basic("bob", "route only"))[0] == 401, 30,
               "the access list on the node", interval=0.1, on_timeout=stack.logs)
    status, headers, _ = request(port, host, headers=basic("bob", "route only"))
    assert headers["www-authenticate"] == 'Basic realm="Office", charset="UTF-8"'
    # carol is only the list's user: the route refuses her (its realm)
    status, headers, _ = request(port, host, headers=basic("carol", "list only"))
    assert status == 401 and headers["www-authenticate"] == 'Basic realm="Team area", charset="UTF-8"'
    assert 'details="basic auth Team area"' in headers["proxy-status"]
    # alice is in both with the same password: 200, Authorization removed
    status, _, body = request(port, host, headers=basic("alice", "correct horse"))
    assert status == 200, body
    assert "authorization" not in {k.lower() for k in upstream_headers(body)}

    # `manage.py checkconfig` (a subprocess, as the README runs it) passes with the field
    out = stack.cp.manage("checkconfig", "--schema-only").stdout
    assert "ERROR" not in out

    # basic_auth null: the route's users no longer apply (the list's still do)
    api.ok("PATCH", f"/api/v1/routes/{route['id']}/", {"basic_auth": None})
    wait_until(lambda: request(port, host, headers=basic("carol", "list only"))[0] == 200, 30,
               "route basic auth off on the node", interval=0.1, on_timeout=stack.logs)
