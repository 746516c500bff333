"""cpshell (``tests/e2e/cpshell.py``) plus the operations of the quarantine test
(``test_quarantine.py``) and bench (``bench/quarantine_bench.py``), run as its own
process against the stack's database.

    {"op": "tenant_site", "tenant": "a-1f2e3d", "name": "web", "port": 1234}
        -> a tenant (created when new, allowed 127.0.0.0/8) with a pool and a route
           for ``<name>.<tenant>.e2e.test``: {"host", "route", "pool", "version", "hash"}
    {"op": "store_skewed_version", "route": 7}
        -> a version stored directly (no gate), as a control plane of another software
           version would: the current config, with route 7 carrying a response header
           value this node refuses. The nodes are told at once. {"version", "hash"}
    {"op": "touch_route", "route": 7}   -> the owner saves the route again (through
                                           the services): {"version", "hash"}
    {"op": "nack_to_accepted", ...}     -> seconds from the first NACK to the last ACK
    {"op": "quarantine_state"}          -> quarantines, quarantine audit entries,
                                           node_rejected_config alerts, latest snapshot
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e import cpshell
from tests.e2e.cpshell import latest, op


@op
def tenant_site(tenant, name, port):
    from controlplane.proxy import services
    from controlplane.tenancy.models import Tenant

    actor = services.Actor.system()
    owner = Tenant.objects.filter(slug=tenant).first()
    if owner is None:
        owner = services.create_tenant(actor, slug=tenant, name=tenant, allowed_networks=["127.0.0.0/8"])
        services.create_delegation(actor, owner, f"{tenant}.e2e.test")
    host = f"{name}.{tenant}.e2e.test"
    pool = services.create_pool(actor, tenant=owner, name=f"pool-{name}",
                                targets=[{"host": "127.0.0.1", "port": port, "weight": 1, "state": "enabled"}])
    route = services.create_route(actor, tenant=owner, name=f"route-{name}", hosts=[host], pool=pool)
    return {"host": host, "route": route.pk, "pool": pool.pk, **latest()}


@op
def store_skewed_version(route):
    from django.db import transaction

    from controlplane.publishing import compiler, notify, publisher
    from controlplane.publishing.models import ConfigVersion
    from dataplane import schema

    with transaction.atomic():
        publisher.lock()
        snapshot = compiler.compile_snapshot()
        skewed = next(r for r in snapshot["routes"] if r["id"] == route)
        skewed["response_headers"]["set"] = [{"name": "X-Skew", "value": "a\nb"}]
        current = publisher.current_version()
        version = ConfigVersion.objects.create(
            number=current.number + 1, sha256=schema.snapshot_hash(snapshot), snapshot=snapshot,
            author="skewed control plane", note="e2e: a version this node rejects")
        notify.config_changed_on_commit()
    return {"version": version.number, "hash": version.sha256}


@op
def touch_route(route):
    from controlplane.proxy import services
    from controlplane.proxy.models import Route

    services.update_route(services.Actor.system(), Route.objects.get(pk=route), note="e2e: the owner saves it")
    return latest()


@op
def tenant_channel(tenant, name):
    """An e-mail alert channel of ``tenant`` (None: the platform's)."""
    from controlplane.alerts.models import AlertChannel
    from controlplane.tenancy.models import Tenant

    owner = Tenant.objects.get(slug=tenant) if tenant else None
    return {"id": AlertChannel.objects.create(name=name, tenant=owner, kind="email",
                                              emails=[f"{name}@example.test"]).pk}


@op
def nack_to_accepted(rejected, accepted, nodes):
    """Seconds from the first NACK of version ``rejected`` to the last of ``nodes`` ACKing
    version ``accepted`` (the nodes' own records), and how many NACKs there were."""
    from controlplane.publishing.models import NodeEvent

    events = NodeEvent.objects.filter(node__name__in=nodes)
    nacks = list(events.filter(kind="nack", version=rejected).values_list("created", flat=True))
    acks = {}
    for name, created in events.filter(kind="ack", version=accepted).values_list("node__name", "created"):
        acks[name] = min(created, acks.get(name, created))
    if not nacks or set(acks) != set(nodes):
        raise ValueError(f"no NACK of v{rejected} or not every node ACKed v{accepted}")
    return {"seconds": (max(acks.values()) - min(nacks)).total_seconds(), "nacks": len(nacks)}


@op
def quarantine_state():
    from controlplane.alerts.models import Alert
    from controlplane.alerts.services import channels_for
    from controlplane.audit.models import AuditEntry
    from controlplane.publishing import publisher
    from controlplane.publishing.models import Quarantine

    return {
        "quarantines": [{"kind": q.kind, "object_id": q.object_id, "tenant": q.tenant.slug if q.tenant else None,
                         "version": q.version, "node": q.node_name, "error": q.error}
                        for q in Quarantine.objects.select_related("tenant").order_by("id")],
        "audit": [{"actor": e.actor, "tenant": e.tenant.slug if e.tenant else None, "object_type": e.object_type,
                   "object_id": e.object_id, "after": e.after, "config_version": e.config_version}
                  for e in AuditEntry.objects.filter(action="quarantine").select_related("tenant").order_by("id")],
        "alerts": [{"tenant": a.tenant.slug if a.tenant else None, "subject": a.subject, "data": a.data,
                    "queued_for": sorted(channels_for(a.tenant).values_list("name", flat=True))}
                   for a in Alert.objects.filter(kind="node_rejected_config").select_related("tenant").order_by("id")],
        "routes": [r["id"] for r in publisher.current_version().snapshot["routes"]],
    }


if __name__ == "__main__":
    cpshell.main()
