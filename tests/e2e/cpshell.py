"""Control-plane helper for the e2e tests, run as its own process with the stack's env.

The e2e tests must not use pytest-django's test database: they change the *stack's*
database (the one Daphne uses) through the service layer. This process configures
Django from the same environment as Daphne (SWITCHYARD_VAR_DIR, DATABASE_URL, ...),
then answers one JSON request per line on stdin with one JSON line on stdout:

    {"op": "create_site", "name": "a", "host": "a.test", "port": 1234}
    -> {"ok": true, "result": {...}}   or   {"ok": false, "error": "..."}

One-shot use: ``python tests/e2e/cpshell.py OP '{"arg": ...}'``.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

import django  # noqa: E402

django.setup()

from django.db import close_old_connections  # noqa: E402

OPS = {}


def op(fn):
    OPS[fn.__name__] = fn
    return fn


@contextlib.contextmanager
def hints_dropped():
    """Publish without the channel-layer hint: as if the group message were lost."""
    from controlplane.publishing import notify

    original = notify._send
    notify._send = lambda message: None
    try:
        yield
    finally:
        notify._send = original


@op
def ping():
    from django.db import connection

    return {"vendor": connection.vendor}


@op
def register_node(name):
    from controlplane.publishing.models import Node

    node, token = Node.register(name)
    return {"id": node.id, "token": token}


@op
def latest():
    from controlplane.publishing.models import ConfigVersion

    v = ConfigVersion.objects.order_by("-number").first()
    return {"version": v.number, "hash": v.sha256} if v else {"version": None, "hash": None}


@op
def node(name):
    from controlplane.publishing.models import Node

    n = Node.objects.get(name=name)
    return {"connected": n.connected, "applied_version": n.applied_version, "applied_hash": n.applied_hash,
            "rejected_version": n.rejected_version, "last_error": n.last_error,
            "last_seen": n.last_seen.isoformat() if n.last_seen else None}


@op
def create_site(name, host, port, upstream_host="127.0.0.1", drop_hint=False):
    """A pool with one target and a route for ``host``, through the service layer."""
    from controlplane.proxy import services

    actor = services.Actor.system()
    ctx = hints_dropped() if drop_hint else contextlib.nullcontext()
    with ctx:
        pool = services.create_pool(actor, name=f"pool-{name}", note=f"e2e: pool {name}",
                                    targets=[{"host": upstream_host, "port": port, "weight": 1,
                                              "state": "enabled"}])
        services.create_route(actor, name=f"route-{name}", hosts=[host], path="/", path_type="prefix",
                              pool=pool, note=f"e2e: route {name}")
    return latest()


@op
def bootstrap_state():
    from django.contrib.auth import get_user_model

    from controlplane.proxy.models import Pool, Route
    from controlplane.publishing.models import ConfigVersion, Node

    User = get_user_model()
    return {
        "admins": list(User.objects.filter(is_superuser=True).values_list("username", flat=True)),
        "users": User.objects.count(),
        "nodes": list(Node.objects.values_list("name", flat=True)),
        "node_token_hashes": dict(Node.objects.values_list("name", "token_hash")),
        "routes": [{"name": r.name, "hosts": r.hosts, "pool": r.pool.name,
                    "targets": [f"{t.host}:{t.port}" for t in r.pool.targets.all()]}
                   for r in Route.objects.select_related("pool")],
        "pools": Pool.objects.count(),
        "versions": ConfigVersion.objects.count(),
    }


def run(name, args):
    close_old_connections()
    try:
        return {"ok": True, "result": OPS[name](**args)}
    except Exception as exc:  # noqa: BLE001 - reported to the test
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def main():
    if len(sys.argv) > 1:
        reply = run(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
        print(json.dumps(reply))
        sys.exit(0 if reply["ok"] else 1)
    print(json.dumps({"ok": True, "result": "ready"}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        print(json.dumps(run(request.pop("op"), request), default=str), flush=True)


if __name__ == "__main__":
    main()
