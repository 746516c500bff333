"""Routes: list, detail, edit (preview → publish), delete."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.shortcuts import render
from django.urls import reverse

from controlplane.acme import services as acme_services
from controlplane.audit.models import AuditEntry
from controlplane.audit.services import Actor
from controlplane.proxy import services
from controlplane.proxy.models import Route
from controlplane.tenancy.access import principal as get_principal

from .. import forms, telemetry
from ..ratelimitforms import route_rate_limits
from .common import object_for_edit, page, require_edit
from .flows import change_flow, delete_flow, fresh


@login_required
def route_list(request):
    p = get_principal(request)
    qs = p.scope(Route.objects.select_related("tenant", "pool", "certificate"))
    q = (request.GET.get("q") or "").strip()
    if q:
        qs = qs.filter(Q(name__icontains=q) | Q(hosts__icontains=q) | Q(path__icontains=q))
    return render(request, "dashboard/routes/list.html", {
        "page": page(request, qs), "q": q, "can_create": p.can_edit_any, "traffic": telemetry.per_route(p),
    })


@login_required
def route_detail(request, pk):
    p = get_principal(request)
    route = p.get_or_404(Route.objects.select_related("tenant", "pool", "certificate", "access_list"), id=pk)
    history = AuditEntry.objects.filter(object_type="route", object_id=str(route.pk))[:20]
    return render(request, "dashboard/routes/detail.html", {
        "route": route, "can_edit": p.can_edit(route.tenant_id), "history": history,
        "targets": route.pool.targets.all(), "traffic": telemetry.route_charts(p, route),
        "acme": acme_services.status(route),
        "rate_limits": route_rate_limits(route),
    })


@login_required
def route_edit(request, pk=None):
    p = get_principal(request)
    route = object_for_edit(p, Route.objects.select_related("tenant"), pk)
    form = forms.RouteForm(request.POST or None, principal=p, instance=route)
    actor = Actor.from_request(request)

    def action(note):
        tenant = form.cleaned_data.get("tenant")
        if route is None:
            return services.create_route(actor, tenant=tenant, note=note, **form.service_fields())
        return services.update_route(actor, fresh(route), note=note, if_match=form.if_match, tenant=tenant,
                                     **form.service_fields())

    return change_flow(request, form=form, obj=route, kind="route", action=action,
                       template="dashboard/routes/form.html", context={"route": route},
                       title=f"Route {route.name}" if route else "New route",
                       success_url=lambda obj: reverse("dashboard:route", args=[obj.pk]))


@login_required
def route_delete(request, pk):
    p = get_principal(request)
    route = p.get_or_404(Route.objects.select_related("tenant"), id=pk)
    require_edit(p, route.tenant_id)
    return delete_flow(request, obj=route, kind="route", delete=services.delete_route,
                       success_url=reverse("dashboard:routes"))
