"""A dependency that is down gives a clean answer.

Production mode with real processes: a fresh PostgreSQL database, a ``redis-server`` of
this test's own on a free loopback port (the machine's shared Redis is never touched),
Daphne serving ``controlplane.asgi`` and a data-plane node.

- Redis really stopped (the process gone), then frozen (SIGSTOP): a PATCH through the
  API answers 200 with JSON at once, the change is stored, the lost hint is logged and
  counted, and the node serves the change once Redis is back.
- PostgreSQL unreachable (the database stops accepting connections and Daphne's
  connection is terminated): every API call answers 503 with a JSON body and
  ``Retry-After``, every dashboard and admin page the dashboard's own 503 page; both
  recover when the database is back.
"""
from __future__ import annotations

import json
import time

import psycopg
import pytest
import requests

from tests.conftest import POSTGRES_URL
from tests.e2e.harness import PostgresDatabase, Stack, stack_on_own_redis, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

# Well below the 30 s socket timeout of the channel layer's Redis connections.
FROZEN_REDIS_BOUND = 10.0


@pytest.fixture
def stack(tmp_path):
    """Daphne + (later) nodes on a fresh PostgreSQL database and this test's own Redis."""
    with stack_on_own_redis(tmp_path, POSTGRES_URL) as parts:
        yield parts


class Api:
    def __init__(self, port: int, token: str):
        self.base, self.token = f"http://127.0.0.1:{port}/api/v1", token

    def call(self, method: str, path: str, body=None) -> requests.Response:
        return requests.request(method, self.base + path, json=body, timeout=60,
                                headers={"Authorization": f"Bearer {self.token}"})

    def ok(self, method: str, path: str, body=None) -> dict:
        response = self.call(method, path, body)
        assert response.status_code == 200, (method, path, response.status_code, response.text[:500])
        return response.json()


def _staff(cp, password: str = "") -> str:
    """A staff user (with ``password`` for the dashboard); returns an API token of it."""
    code = ("import json\nfrom django.contrib.auth import get_user_model\n"
            "from controlplane.tenancy.models import ApiToken\n"
            "u, _ = get_user_model().objects.get_or_create(username='ops')\n"
            f"u.is_staff = u.is_superuser = True; u.set_password({password!r}); u.save()\n"
            "row, plain = ApiToken.issue(u, name='e2e dependencies')\n"
            "print(json.dumps({'token': plain}))")
    return json.loads(cp.manage("shell", "-c", code).stdout.strip().splitlines()[-1])["token"]


def _route(api: Api, host: str) -> dict:
    return api.ok("GET", f"/routes/?host={host}")["results"][0]


def _hints_lost_logged(stack: Stack, count: int) -> bool:
    return f"Hints lost by this process: {count}" in stack.daphne.log_path.read_text(errors="replace")


def test_a_patch_with_redis_stopped_or_frozen_answers_200_and_reaches_the_node(stack):
    stack, _db, server = stack
    up_a, up_b = stack.add_upstream("a"), stack.add_upstream("b")
    site_a, site_b = stack.create_site("a", up_a), stack.create_site("b", up_b)
    node = stack.add_node()
    node.wait_served(site_a["host"], up_a.name, timeout=30)
    api = Api(stack.cp_port, _staff(stack.cp))
    route = _route(api, site_a["host"])
    pool_a, pool_b = route["pool"], _route(api, site_b["host"])["pool"]

    server.stop()
    response = api.call("PATCH", f"/routes/{route['id']}/", {"pool": pool_b})
    assert response.status_code == 200, response.text[:500]
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["pool"] == pool_b
    assert _route(api, site_a["host"])["pool"] == pool_b  # stored, served from the database
    wait_until(lambda: _hints_lost_logged(stack, 1), 10, "the lost hint in Daphne's log",
               on_timeout=stack.daphne.tail)

    server.start()
    node.wait_served(site_a["host"], up_b.name, timeout=60)

    server.freeze()
    try:
        started = time.monotonic()
        response = api.call("PATCH", f"/routes/{route['id']}/", {"pool": pool_a})
        took = time.monotonic() - started
        assert response.status_code == 200, response.text[:500]
        assert response.json()["pool"] == pool_a
        assert took < FROZEN_REDIS_BOUND, f"the PATCH took {took:.1f} s with Redis frozen"
        wait_until(lambda: _hints_lost_logged(stack, 2), 10, "the second lost hint in Daphne's log",
                   on_timeout=stack.daphne.tail)
    finally:
        server.thaw()
    node.wait_served(site_a["host"], up_a.name, timeout=60)


def _database_accepts_connections(db: PostgresDatabase, accept: bool) -> None:
    """Like a database server going away for this database only: new connections are
    refused and the open ones (Daphne's) are terminated."""
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{db.name}" ALLOW_CONNECTIONS {str(accept).lower()}')
        if not accept:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [db.name])


def _assert_api_503(response: requests.Response) -> None:
    assert response.status_code == 503, response.text[:500]
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    assert int(response.headers["Retry-After"]) > 0
    assert "database is unavailable" in response.json()["detail"]


def _assert_page_503(response: requests.Response) -> None:
    assert response.status_code == 503, response.text[:500]
    assert response.headers["Content-Type"].startswith("text/html")
    assert int(response.headers["Retry-After"]) > 0
    assert "Temporarily unavailable" in response.text and "database is unavailable" in response.text


def test_with_the_database_unreachable_the_api_answers_json_503_and_pages_the_dashboard_503(stack):
    stack, db, _server = stack
    site = stack.create_site("a", stack.add_upstream("a"))
    api = Api(stack.cp_port, _staff(stack.cp, password="correct horse battery"))
    route = _route(api, site["host"])
    browser = requests.Session()
    base = f"http://127.0.0.1:{stack.cp_port}"
    browser.get(f"{base}/login/", timeout=30)
    signed_in = browser.post(f"{base}/login/", timeout=30, data={
        "username": "ops", "password": "correct horse battery", "csrfmiddlewaretoken": browser.cookies["csrftoken"]})
    assert signed_in.status_code == 200 and signed_in.url == f"{base}/", signed_in.url

    _database_accepts_connections(db, False)
    try:
        _assert_api_503(api.call("GET", "/routes/"))  # Daphne's open connection was terminated
        _assert_api_503(api.call("GET", "/routes/"))  # and a new one is refused
        _assert_api_503(api.call("PATCH", f"/routes/{route['id']}/", {"priority": 5}))
        _assert_api_503(api.call("POST", "/pools/", {"name": "new", "targets": []}))
        _assert_api_503(api.call("GET", "/nodes/"))
        _assert_api_503(api.call("GET", "/diagnostics/nodes/"))
        for path in ("/", "/routes/", f"/routes/{route['id']}/", "/admin/"):
            _assert_page_503(browser.get(base + path, timeout=30))
    finally:
        _database_accepts_connections(db, True)

    assert api.ok("GET", f"/routes/{route['id']}/")["priority"] == route["priority"]
    assert browser.get(f"{base}/routes/", timeout=30).status_code == 200
