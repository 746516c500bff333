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
            "last_seen": n.last_seen.isoformat() if n.last_seen else None,
            "workers": n.workers,
            "connected_since": n.connected_since.isoformat() if n.connected_since else None}


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



# ---------------------------------------------------------------- health checks and alerts

@op
def create_checked_site(name, host, ports, interval=1.0, timeout=0.5, unhealthy_threshold=2,
                        healthy_threshold=2, retries=0, path="/"):
    """A pool with an active HTTP check over 127.0.0.1:``ports`` and a route for ``host``."""
    from controlplane.proxy import services
    from controlplane.proxy.models import Target

    actor = services.Actor.system()
    pool = services.create_pool(
        actor, name=f"pool-{name}", note=f"e2e: checked pool {name}", retries=retries,
        health_check_enabled=True, health_check_type="http", health_check_path=path,
        health_check_interval=interval, health_check_timeout=timeout,
        unhealthy_threshold=unhealthy_threshold, healthy_threshold=healthy_threshold,
        targets=[{"host": "127.0.0.1", "port": p, "weight": 1, "state": "enabled"} for p in ports])
    services.create_route(actor, name=f"route-{name}", hosts=[host], path="/", path_type="prefix",
                          pool=pool, note=f"e2e: route {name}")
    targets = {str(port): tid for tid, port in Target.objects.filter(pool=pool).values_list("id", "port")}
    return {"pool_id": pool.pk, "pool": pool.name, "targets": targets, **latest()}


@op
def health_round(pool_id):
    """One active-check round of a pool, run in this process (as the Celery worker would)."""
    from controlplane.health.rounds import run_pool_round

    return run_pool_round(pool_id).as_dict()


@op
def reset_pool_health(pool_id):
    """``health.rounds.reset_pool_health``: every down target of the pool marked healthy."""
    from controlplane.health.rounds import reset_pool_health as reset

    return {str(k): v for k, v in reset(pool_id).items()}


@op
def target_health(pool_id):
    from controlplane.health.models import TargetHealth
    from controlplane.proxy.models import Target

    rows = []
    for t in Target.objects.filter(pool_id=pool_id).order_by("pk"):
        h = TargetHealth.objects.filter(target=t).first()
        rows.append({"id": t.pk, "port": t.port, "healthy": t.healthy, "reason": t.health_reason,
                     "last_ok": h.last_ok if h else None,
                     "last_checked": h.last_checked.timestamp() if h and h.last_checked else None})
    return rows


@op
def transitions(target_id):
    from controlplane.health.models import HealthTransition

    return [{"healthy": t.healthy, "reason": t.reason, "created": t.created.timestamp()}
            for t in HealthTransition.objects.filter(target_id=target_id).order_by("created", "id")]


@op
def create_channel(name, kind, emails=None, url="", secret=""):
    from controlplane.alerts.models import AlertChannel
    from controlplane.alerts.services import save_channel
    from controlplane.audit.services import Actor

    channel = AlertChannel(name=name, kind=kind, emails=list(emails or []), url=url)
    save_channel(Actor.system(), channel, secret=secret or None, note="e2e")
    return {"id": channel.pk}


@op
def disable_channels(ids):
    from controlplane.alerts.models import AlertChannel

    return AlertChannel.objects.filter(pk__in=ids).update(enabled=False)


@op
def alerts(kind=None, dedup_prefix=""):
    from controlplane.alerts.models import Alert

    qs = Alert.objects.order_by("id")
    if kind:
        qs = qs.filter(kind=kind)
    if dedup_prefix:
        qs = qs.filter(dedup_key__startswith=dedup_prefix)
    return [{"id": a.pk, "kind": a.kind, "subject": a.subject, "dedup_key": a.dedup_key, "data": a.data,
             "created": a.created.timestamp()} for a in qs]


@op
def deliveries(alert_id):
    from controlplane.alerts.models import Delivery

    return [{"channel": d.channel_id, "attempt": d.attempt, "status": d.status,
             "response_code": d.response_code, "error": d.error, "created": d.created.timestamp()}
            for d in Delivery.objects.filter(alert_id=alert_id).order_by("id")]


@op
def raise_alert(kind, subject, dedup_key, data=None):
    """An alert through the service layer: its deliveries are queued for the real worker."""
    from controlplane.alerts.services import raise_alert as raise_

    alert = raise_(kind, subject=subject, dedup_key=dedup_key, data=data or {})
    return {"id": alert.pk if alert else None}


@op
def upload_certificate(name, certificate_pem, private_key_pem, ca_bundle_pem=""):
    """``certs.services.upload_certificate``: validate, store, publish, audit, and (on commit)
    queue the expiry scan of the new certificate for the worker."""
    from controlplane.audit.services import Actor
    from controlplane.certs.services import upload_certificate as upload

    cert = upload(Actor.system(), name=name, certificate_pem=certificate_pem,
                  private_key_pem=private_key_pem, ca_bundle_pem=ca_bundle_pem)
    return {"id": cert.pk, "fingerprint": cert.fingerprint, "not_after": cert.not_after.isoformat()}


@op
def queue_expiry_scan():
    """Queue ``scan_expiry`` (all certificates) for the worker; returns the task id."""
    from controlplane.certs.tasks import scan_expiry

    return {"task_id": scan_expiry.delay().id}


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
