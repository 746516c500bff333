"""The data-plane nodes and what each one runs."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render

from controlplane.publishing import publisher, ratelimits
from controlplane.publishing.models import Node, NodeEvent
from controlplane.tenancy.access import principal as get_principal


def _mark_current(nodes, current):
    for n in nodes:
        n.is_current = bool(current and n.applied_hash == current.sha256)
    return nodes


@login_required
def node_list(request):
    current = publisher.current_version()
    nodes = _mark_current(list(Node.objects.all()), current)
    return render(request, "dashboard/nodes/list.html", {"nodes": nodes, "current": current})


@login_required
def node_detail(request, pk):
    p = get_principal(request)
    try:
        node = Node.objects.get(pk=pk)
    except (Node.DoesNotExist, ValueError):
        raise Http404("not found") from None
    current = publisher.current_version()
    _mark_current([node], current)
    return render(request, "dashboard/nodes/detail.html", {
        "node": node, "current": current,
        "events": NodeEvent.objects.filter(node=node, kind__in=(NodeEvent.ACK, NodeEvent.NACK))[:50],
        "rate_limit_fallback": ratelimits.fallback_since([node.pk]).get(node.pk),
        "show_errors": p.staff})
