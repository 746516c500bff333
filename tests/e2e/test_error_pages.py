"""end to end: custom error pages through real processes.

Daphne, a real node (``python -m dataplane``), a real upstream, a port nobody listens
on (502) and a server that accepts and never answers (504). Two tenants: alpha's routes
get their own pages through /api/v1/routes/ (``error_pages``); beta's route has none;
the platform's 404 and 502 pages come through /api/v1/error-pages/. Every generated
status answers with its page, the request id of X-Request-ID and the Proxy-Status error
filled in, JSON for ``Accept: application/json``, and alpha's pages never reach beta.
"""
from __future__ import annotations

import http.client
import json
import socket
import threading

import pytest

from tests.e2e.harness import wait_until
from tests.e2e.test_access_lists import Api, staff_token

pytestmark = pytest.mark.e2e

PAGE = ("<!doctype html><title>{{status}} {{reason}}</title>"
        "<p>alpha {{status}} {{error}} / {{details}} / rid={{request_id}}</p>")
PLATFORM_404 = "<p>platform 404: nothing here ({{details}}) rid={{request_id}}</p>"
PLATFORM_502 = "<p>platform 502 {{error}} rid={{request_id}}</p>"


def alpha(status: int, reason: str, error: str, details: str, rid: str) -> str:
    return (f"<!doctype html><title>{status} {reason}</title>"
            f"<p>alpha {status} {error} / {details} / rid={rid}</p>")


def request(port: int, host: str, headers: dict | None = None) -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/", headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


class Silent:
    """Accepts connections and never answers (the upstream of a 504)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


SETUP = """
import json
from django.db import transaction
from controlplane.health.status import bump_generation
from controlplane.proxy import services
actor = services.Actor.system()
tag, up, down, silent = {tag!r}, {up}, {down}, {silent}
out = {{}}
for slug in ("alpha", "beta"):
    t = services.create_tenant(actor, slug=f"{{slug}}-{{tag}}", name=slug, allowed_networks=["127.0.0.0/8"])
    services.create_delegation(actor, t, f"{{slug}}-{{tag}}.e2e.test")
    def pool(name, port, **kw):
        return services.create_pool(actor, tenant=t, name=f"{{name}}", health_check_enabled=False, retries=0,
                                    targets=[{{"host": "127.0.0.1", "port": port, "weight": 1}}], **kw)
    def route(name, p, **kw):
        r = services.create_route(actor, tenant=t, name=name, hosts=[f"{{name}}.{{slug}}-{{tag}}.e2e.test"],
                                  pool=p, **kw)
        out[f"{{slug}}-{{name}}"] = {{"id": r.pk, "host": r.hosts[0]}}
    route("down", pool("down", down))
    if slug == "alpha":
        ok = pool("ok", up)
        acl = services.create_access_list(actor, tenant=t, name="nobody", default="deny", rules=[])
        route("denied", ok, access_list=acl)
        route("slow", pool("slow", silent, read_timeout=1.0))
        none = pool("none", up)
        route("none", none)  # then its one target unhealthy (as the checks would find it)
        with transaction.atomic():
            none.targets.update(healthy=False)
            bump_generation()
        route("maint", ok, maintenance=True, retry_after=30)
        route("limited", ok, rate_limit={{"rate": 0.001, "burst": 1}})
print(json.dumps(out))
"""


def test_custom_error_pages_for_every_generated_status_on_a_real_node(make_stack):
    stack = make_stack()
    stack.start_control_plane()
    upstream = stack.add_upstream("pages")
    silent = Silent()
    try:
        run(stack, upstream, silent)
    finally:
        silent.close()


def run(stack, upstream, silent):
    site = stack.create_site("pages", upstream)
    node = stack.add_node()
    node.wait_served(site["host"], upstream.name, timeout=30)
    port = node.http_port
    script = SETUP.format(tag=stack.tag, up=upstream.port, down=closed_port(), silent=silent.port)
    routes = json.loads(stack.cp.manage("shell", "-c", script).stdout.strip().splitlines()[-1])
    api = Api(stack.cp_port, staff_token(stack.cp))
    pages = {str(s): PAGE for s in (403, 429, 502, 503, 504)}
    for key, r in routes.items():
        if key.startswith("alpha-"):
            assert api.ok("PATCH", f"/api/v1/routes/{r['id']}/", {"error_pages": pages})["error_pages"] == pages
    api.ok("POST", "/api/v1/error-pages/", {"status": 404, "body": PLATFORM_404}, status=201)
    api.ok("POST", "/api/v1/error-pages/", {"status": 502, "body": PLATFORM_502}, status=201)
    bad = api.call("POST", "/api/v1/error-pages/", {"status": 503, "body": "{{oops}}"})
    assert bad[0] == 400 and "unknown placeholder {{oops}}" in json.dumps(bad[1])

    html = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    as_json = {"Accept": "application/json"}
    down = routes["alpha-down"]["host"]
    wait_until(lambda: "alpha 502" in request(port, down, html)[2], 60, "alpha's 502 page on the node",
               interval=0.2, on_timeout=stack.logs)
    # target health travels apart from the config (its own push): wait for it too
    wait_until(lambda: request(port, routes["alpha-none"]["host"], html)[0] == 503, 60,
               "the unhealthy target's state on the node", interval=0.2, on_timeout=stack.logs)

    def check(host: str, status: int, reason: str, error: str, details: str, rid: str) -> dict:
        code, headers, body = request(port, host, {**html, "X-Request-ID": rid})
        assert code == status, (host, code, body)
        assert headers["x-request-id"] == rid
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert headers["proxy-status"] == f'switchyard; error={error}; details="{details}"'
        assert body == alpha(status, reason, error, details, rid)
        assert int(headers["content-length"]) == len(body.encode())
        code, jheaders, jbody = request(port, host, {**as_json, "X-Request-ID": rid + "j"})
        assert code == status and jheaders["content-type"] == "application/json"
        assert json.loads(jbody) == {"status": status, "error": error, "details": details,
                                     "request_id": rid + "j"}
        return headers

    # 502: the upstream refuses; 504: it never answers; 503: no healthy target;
    # 403: the access list refuses (its name in details)
    check(down, 502, "Bad Gateway", "connection_refused", "upstream refused the connection", "r-502")
    check(routes["alpha-slow"]["host"], 504, "Gateway Timeout", "http_response_timeout",
          "upstream sent no response headers in time", "r-504")
    check(routes["alpha-none"]["host"], 503, "Service Unavailable", "destination_unavailable",
          "no healthy upstream target", "r-503")
    check(routes["alpha-denied"]["host"], 403, "Forbidden", "http_request_denied", "access list nobody", "r-403")

    # 503 maintenance: the route's 503 page with Retry-After; JSON clients keep the maintenance JSON
    code, headers, body = request(port, routes["alpha-maint"]["host"], {**html, "X-Request-ID": "r-m"})
    assert (code, headers["retry-after"]) == (503, "30")
    assert body == alpha(503, "Service Unavailable", "destination_unavailable", "maintenance", "r-m")
    code, headers, body = request(port, routes["alpha-maint"]["host"], as_json)
    assert code == 503 and json.loads(body)["error"] == "maintenance" and headers["retry-after"] == "30"

    # 429: the rate limit (burst 1, then one request per 1000 s)
    limited = routes["alpha-limited"]["host"]
    code, headers, body = wait_until(
        lambda: (r := request(port, limited, {**html, "X-Request-ID": "r-429"}))[0] == 429 and r, 30,
        "a 429 from the rate limit", interval=0.1)[0]
    assert body == alpha(429, "Too Many Requests", "http_request_denied", "rate limit", "r-429")
    assert int(headers["retry-after"]) >= 1 and headers["x-request-id"] == "r-429"

    # 404 no route: the platform's page (every host)
    code, headers, body = request(port, f"nothing.{stack.tag}.e2e.test", {"X-Request-ID": "r-404"})
    assert code == 404 and body == "<p>platform 404: nothing here (no route matches this request) rid=r-404</p>"
    code, _, body = request(port, f"nothing.{stack.tag}.e2e.test", {**as_json, "X-Request-ID": "r-404j"})
    assert json.loads(body) == {"status": 404, "error": "destination_not_found",
                                "details": "no route matches this request", "request_id": "r-404j"}

    # beta's route: never alpha's page; the platform's 502
    code, headers, body = request(port, routes["beta-down"]["host"], {**html, "X-Request-ID": "r-b"})
    assert code == 502 and body == "<p>platform 502 connection_refused rid=r-b</p>" and "alpha" not in body

    # removing the platform 502 page: beta's browsers get the built-in page, other clients text
    api.ok("DELETE", "/api/v1/error-pages/502/", status=204)
    wait_until(lambda: "platform 502" not in request(port, routes["beta-down"]["host"], html)[2], 60,
               "the platform 502 page removed on the node", interval=0.2)
    code, headers, body = request(port, routes["beta-down"]["host"], {**html, "X-Request-ID": "r-b2"})
    assert code == 502 and "<title>502 Bad Gateway</title>" in body and "r-b2" in body and "alpha" not in body
    code, headers, body = request(port, routes["beta-down"]["host"])
    assert headers["content-type"].startswith("text/plain") and body.startswith("502 Bad Gateway")
