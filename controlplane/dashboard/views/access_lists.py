"""Access lists: list, new and edit (preview → publish), delete."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.shortcuts import render
from django.urls import reverse

from controlplane.audit.services import Actor
from controlplane.proxy import services
from controlplane.proxy.models import AccessList
from controlplane.tenancy.access import principal as get_principal

from .. import forms
from .common import object_for_edit, page, require_edit
from .flows import change_flow, delete_flow, fresh


@login_required
def access_list_list(request):
    p = get_principal(request)
    qs = p.scope(AccessList.objects.select_related("tenant")).annotate(
        n_routes=Count("routes", distinct=True)).order_by("name", "id")
    return render(request, "dashboard/access_lists/list.html", {"page": page(request, qs),
                                                                 "can_create": p.can_edit_any})


@login_required
def access_list_edit(request, pk=None):
    p = get_principal(request)
    acl = object_for_edit(p, AccessList.objects.select_related("tenant"), pk)
    form = forms.AccessListForm(request.POST or None, principal=p, instance=acl)
    actor = Actor.from_request(request)

    def action(note):
        tenant = form.cleaned_data.get("tenant")
        if acl is None:
            return services.create_access_list(actor, tenant=tenant, note=note, **form.service_fields())
        return services.update_access_list(actor, fresh(acl), note=note, if_match=form.if_match, tenant=tenant,
                                           **form.service_fields())

    routes = list(acl.routes.select_related("tenant").order_by("name")) if acl is not None else []
    return change_flow(request, form=form, obj=acl, kind="access list", action=action,
                       template="dashboard/access_lists/form.html",
                       context={"acl": acl, "routes": routes},
                       title=f"Access list {acl.name}" if acl else "New access list",
                       success_url=lambda obj: reverse("dashboard:access_list", args=[obj.pk]))


@login_required
def access_list_delete(request, pk):
    p = get_principal(request)
    acl = p.get_or_404(AccessList.objects.select_related("tenant"), id=pk)
    require_edit(p, acl.tenant_id)
    return delete_flow(request, obj=acl, kind="access list", delete=services.delete_access_list,
                       success_url=reverse("dashboard:access_lists"))
