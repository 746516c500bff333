"""The overview page and the JSON its live charts poll."""
from __future__ import annotations

import datetime as dt

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render
from django.utils import timezone

from controlplane.alerts.models import Alert
from controlplane.audit.models import AuditEntry
from controlplane.health import summary
from controlplane.proxy.models import Certificate, Pool, Route, Target
from controlplane.publishing import publisher
from controlplane.publishing.models import Node
from controlplane.tenancy.access import principal as get_principal

from .. import telemetry

EXPIRY_WARNING_DAYS = 30


@login_required
def overview(request):
    p = get_principal(request)
    current = publisher.current_version()
    now = timezone.now()
    nodes = list(Node.objects.filter(revoked=False))
    targets = p.scope(Target.objects.select_related("pool", "pool__tenant"), "pool__tenant")
    health = summary.counts(targets)
    certs = p.scope(Certificate.objects.select_related("tenant"))
    expiring = certs.filter(not_after__lte=now + dt.timedelta(days=EXPIRY_WARNING_DAYS)).order_by("not_after")
    return render(request, "dashboard/overview.html", {
        "current": current,
        "nodes": nodes,
        "nodes_current": sum(1 for n in nodes if current and n.applied_hash == current.sha256),
        "nodes_connected": sum(1 for n in nodes if n.connected),
        "attention": summary.needing_attention(targets),
        "health": health,
        "unhealthy_count": health["unhealthy"],
        "target_count": health["total"],
        "expiring": expiring[:10],
        "counts": {
            "routes": p.scope(Route.objects.all()).count(),
            "pools": p.scope(Pool.objects.all()).count(),
            "certificates": certs.count(),
        },
        "alerts": p.scope(Alert.objects.select_related("tenant"))[:8],
        "audit": p.scope(AuditEntry.objects.select_related("tenant"))[:8],
        "traffic": telemetry.overview(p),
        "now": now,
    })


@login_required
def traffic_json(request):
    p = get_principal(request)
    return JsonResponse({"traffic": telemetry.overview(p), "routes": telemetry.per_route(p)}, safe=False,
                        json_dumps_params={"default": str})
