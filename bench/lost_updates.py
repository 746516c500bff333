"""Twenty API clients PATCH different fields of one route and one pool at once, against a
real control plane (Daphne, PostgreSQL, Redis); afterwards each field must hold the last
value its writer got a 200 for.

    .venv/bin/python -m bench.lost_updates [--seconds 30] [--writers 20] [--if-match]

``--if-match``: each client reads the object (GET, ``ETag``) and writes with ``If-Match``,
retrying on 412 — the read-modify-write way; the 412s are counted. Prints one JSON line:
PATCHes sent, status counts, fields lost (must be 0) and the versions published.
"""
from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.e2e.harness import ControlPlaneEnv, PostgresDatabase, RedisDatabase, Stack  # noqa: E402

SETUP = """
from django.contrib.auth import get_user_model
from controlplane.proxy import services
from controlplane.tenancy.models import ApiToken
actor = services.Actor.system()
pool = services.create_pool(actor, name="web", targets=[{"host": "127.0.0.1", "port": 9}])
route = services.create_route(actor, name="r", hosts=["lost-updates.localhost"], pool=pool)
_, token = ApiToken.issue(get_user_model().objects.create_user("bench", is_staff=True))
print("SETUP", pool.pk, route.pk, token)
"""

# writer → (object, field path, value of the n-th write)
ROUTE_FIELDS = {
    "name": lambda n: f"route-{n}", "path": lambda n: f"/p{n}", "priority": lambda n: n,
    "strip_prefix": lambda n: n % 2 == 1, "preserve_host": lambda n: n % 2 == 0, "websocket": lambda n: n % 2 == 1,
    "forwarded": lambda n: n % 2 == 1, "hsts_max_age": lambda n: 60 + n, "max_body_size": lambda n: 1024 + n,
    "methods": lambda n: ["GET"] if n % 2 else ["GET", "POST"],
}
POOL_FIELDS = {
    "name": lambda n: f"pool-{n}", "connect_timeout": lambda n: 1.0 + n % 50, "read_timeout": lambda n: 10.0 + n,
    "retries": lambda n: n % 5, "passive_failures": lambda n: 1 + n % 20,
    "passive_ejection_seconds": lambda n: 5.0 + n, "hash_key": lambda n: f"x-key-{n}",
    "algorithm": lambda n: "least_conn" if n % 2 else "round_robin",
    "health_check.interval": lambda n: 2.0 + n % 30, "health_check.path": lambda n: f"/health{n}",
}


def body_of(field: str, value) -> dict:
    outer, _, inner = field.partition(".")
    return {outer: {inner: value}} if inner else {outer: value}


def value_in(obj: dict, field: str):
    outer, _, inner = field.partition(".")
    return obj[outer][inner] if inner else obj[outer]


class Client:
    def __init__(self, port: int, token: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def request(self, method: str, url: str, body=None, if_match: str | None = None):
        headers = dict(self.headers, **({"If-Match": if_match} if if_match else {}))
        self.conn.request(method, url, body=json.dumps(body) if body is not None else None, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.getheader("ETag"), response.read()


def writer(port, token, url, field, make, deadline, use_if_match, stats, last_ok, lock):
    client, n = Client(port, token), 0
    while time.monotonic() < deadline:
        n += 1
        value = make(n)
        etag = client.request("GET", url)[1] if use_if_match else None
        status, _, _ = client.request("PATCH", url, body_of(field, value), if_match=etag)
        with lock:
            stats[status] += 1
            if status == 200:
                last_ok[(url, field)] = value


def run(seconds: float, writers: int, use_if_match: bool) -> dict:
    root = Path(tempfile.mkdtemp(prefix="lost-updates-"))
    db = PostgresDatabase("postgresql://postgres@127.0.0.1:5432/postgres")
    redis = RedisDatabase("redis://127.0.0.1:6379/0")
    cp = ControlPlaneEnv("production", root, db.url, redis.url).setup()
    stack = Stack(cp, root / "stack")
    try:
        out = cp.manage("shell", "-c", SETUP).stdout
        pool_id, route_id, token = [ln for ln in out.splitlines() if ln.startswith("SETUP")][-1].split()[1:]
        stack.start_control_plane()
        urls = {"route": f"/api/v1/routes/{route_id}/", "pool": f"/api/v1/pools/{pool_id}/"}
        jobs = [(urls["route"], f, m) for f, m in ROUTE_FIELDS.items()] + \
               [(urls["pool"], f, m) for f, m in POOL_FIELDS.items()]
        jobs = jobs[:writers]
        stats, last_ok, lock = Counter(), {}, threading.Lock()
        deadline = time.monotonic() + seconds
        threads = [threading.Thread(target=writer, args=(stack.cp_port, token, url, field, make, deadline,
                                                         use_if_match, stats, last_ok, lock))
                   for url, field, make in jobs]
        [t.start() for t in threads]
        [t.join() for t in threads]
        reader = Client(stack.cp_port, token)
        final = {url: json.loads(reader.request("GET", url)[2]) for url in urls.values()}
        lost = sorted(f"{url} {field}" for (url, field), value in last_ok.items()
                      if value_in(final[url], field) != value)
        versions = json.loads(reader.request("GET", "/api/v1/versions/?limit=1")[2])["count"]
        return {"seconds": seconds, "writers": len(jobs), "if_match": use_if_match,
                "patches": sum(stats.values()), "statuses": {str(k): v for k, v in sorted(stats.items())},
                "fields_lost": len(lost), "lost": lost, "versions": versions}
    finally:
        if stack.daphne:
            stack.daphne.stop()
        cp.close()
        db.drop()
        redis.release()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--writers", type=int, default=20)
    parser.add_argument("--if-match", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.seconds, args.writers, args.if_match)))


if __name__ == "__main__":
    main()
