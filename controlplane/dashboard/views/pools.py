"""Pools: list, detail with the targets' health, edit (preview → publish), delete."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.shortcuts import render
from django.urls import reverse

from controlplane.audit.services import Actor
from controlplane.health import summary
from controlplane.health.models import HealthTransition
from controlplane.proxy import services
from controlplane.proxy.models import Pool
from controlplane.tenancy.access import principal as get_principal

from .. import charts, forms
from .common import object_for_edit, page, require_edit
from .flows import change_flow, delete_flow, fresh


@login_required
def pool_list(request):
    p = get_principal(request)
    qs = p.scope(Pool.objects.select_related("tenant")).annotate(
        n_targets=Count("targets", distinct=True),
        n_unhealthy=Count("targets", filter=Q(targets__healthy=False), distinct=True),
        n_routes=Count("routes", distinct=True)).order_by("name", "id")
    pools = page(request, qs)
    health = summary.pool_counts(p.pk for p in pools)
    for pool in pools:
        pool.health = health.get(pool.pk)
    return render(request, "dashboard/pools/list.html", {"page": pools, "can_create": p.can_edit_any})


def _with_health(pool) -> list:
    """The pool's targets, each with its active check, the passive evidence the nodes
    report and its health state (healthy, unhealthy or unknown: ``health.summary``)."""
    return summary.annotate(pool.targets.all(), pool)


@login_required
def pool_detail(request, pk):
    p = get_principal(request)
    pool = p.get_or_404(Pool.objects.select_related("tenant"), id=pk)
    targets = _with_health(pool)
    states = {state: sum(1 for t in targets if t.health_state == state) for state in summary.STATES}
    return render(request, "dashboard/pools/detail.html", {
        "pool": pool, "targets": targets, "health": states,
        "passive_count": sum(1 for t in targets if t.passive or t.ejections),
        "transitions": HealthTransition.objects.filter(pool=pool)[:50],
        "routes": pool.routes.all(), "can_edit": p.can_edit(pool.tenant_id),
        "health_chart": charts.health_history(pool, targets),
    })


@login_required
def pool_edit(request, pk=None):
    p = get_principal(request)
    pool = object_for_edit(p, Pool.objects.select_related("tenant"), pk)
    form = forms.PoolForm(request.POST or None, principal=p, instance=pool)
    actor = Actor.from_request(request)

    def action(note):
        tenant = form.cleaned_data.get("tenant")
        targets = form.cleaned_data.get("targets") or []
        if pool is None:
            return services.create_pool(actor, tenant=tenant, targets=targets, note=note, **form.service_fields())
        return services.update_pool(actor, fresh(pool), targets=targets, note=note, if_match=form.if_match,
                                    tenant=tenant, **form.service_fields())

    return change_flow(request, form=form, obj=pool, kind="pool", action=action,
                       template="dashboard/pools/form.html", context={"pool": pool},
                       title=f"Pool {pool.name}" if pool else "New pool",
                       success_url=lambda obj: reverse("dashboard:pool", args=[obj.pk]))


@login_required
def pool_delete(request, pk):
    p = get_principal(request)
    pool = p.get_or_404(Pool.objects.select_related("tenant"), id=pk)
    require_edit(p, pool.tenant_id)
    return delete_flow(request, obj=pool, kind="pool", delete=services.delete_pool,
                       success_url=reverse("dashboard:pools"))
