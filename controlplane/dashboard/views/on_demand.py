"""On-demand TLS on the tenant page: per delegation, the switch and limits (platform
staff change them) and how it stands (orders used, last refusals with their reason)."""
from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from controlplane.acme import ondemand
from controlplane.acme import services as acme_services
from controlplane.audit.services import Actor
from controlplane.proxy import services
from controlplane.tenancy.access import principal as get_principal
from controlplane.tenancy.models import Delegation

from .common import note, staff_or_404
from .flows import refused

LIMIT = {"min_value": 0, "max_value": 100000}


class OnDemandForm(forms.Form):
    on_demand_tls = forms.BooleanField(required=False, label="On-demand TLS")
    on_demand_max_certificates = forms.IntegerField(label="Certificates at most", **LIMIT)
    on_demand_max_per_hour = forms.IntegerField(label="New orders per hour at most", **LIMIT)
    etag = forms.CharField(required=False, widget=forms.HiddenInput)


def panel(tenant) -> dict:
    """The tenant page's context: {} when the installation has no ACME (nothing to show)."""
    if not acme_services.enabled():
        return {}
    rows = [(d, ondemand.state_of(d)) for d in tenant.delegations.all()]
    return {"on_demand": rows, "ask": bool(settings.SWITCHYARD_ACME_ON_DEMAND_ASK)}


@login_required
@require_POST
def delegation_on_demand(request, pk):
    staff_or_404(get_principal(request))
    delegation = Delegation.objects.filter(pk=pk).select_related("tenant").first()
    if delegation is None:
        raise Http404("not found")
    form = OnDemandForm(request.POST)
    slug = delegation.tenant.slug
    if not form.is_valid():
        messages.error(request, "On-demand TLS: " + "; ".join(
            f"{form.fields[f].label}: {' '.join(e)}" for f, e in form.errors.items() if f in form.fields))
        return redirect("dashboard:tenant", slug=slug)
    data = form.cleaned_data
    if not refused(request, lambda: services.update_delegation_on_demand(
            Actor.from_request(request), delegation, note=note(request), if_match=data.get("etag") or None,
            on_demand_tls=data["on_demand_tls"], on_demand_max_certificates=data["on_demand_max_certificates"],
            on_demand_max_per_hour=data["on_demand_max_per_hour"]), "delegation", "save"):
        messages.success(request, f"On-demand TLS {'on' if data['on_demand_tls'] else 'off'} for "
                                  f"{delegation.suffix}.")
    return redirect("dashboard:tenant", slug=slug)
