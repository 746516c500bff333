"""Alerts and the channels that deliver them."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from controlplane.alerts.models import Alert, AlertChannel
from controlplane.alerts.services import delete_channel, save_channel
from controlplane.alerts.visibility import with_visible_deliveries
from controlplane.audit.services import Actor
from controlplane.proxy.services import PreconditionFailed, locked_current
from controlplane.tenancy.access import principal as get_principal

from .. import forms
from .common import object_for_edit, page, require_edit
from .flows import CONFLICT, attempt


@login_required
def alert_list(request):
    p = get_principal(request)
    qs = p.scope(with_visible_deliveries(Alert.objects.select_related("tenant"), p))
    kind = (request.GET.get("kind") or "").strip()
    if kind:
        qs = qs.filter(kind=kind)
    return render(request, "dashboard/alerts/list.html", {
        "page": page(request, qs), "kind": kind, "kinds": [k for k, _ in Alert.KINDS],
        "channels": p.scope(AlertChannel.objects.select_related("tenant")), "can_create": p.can_edit_any,
    })


def _save(actor, channel, form) -> AlertChannel:
    secret = form.cleaned_data.get("secret") or None
    if channel is None:
        return save_channel(actor, AlertChannel(**form.channel_fields()), secret=secret)
    with locked_current(channel, form.if_match) as current:
        for name, value in form.channel_fields().items():
            setattr(current, name, value)
        return save_channel(actor, current, secret=secret)


@login_required
def channel_edit(request, pk=None):
    p = get_principal(request)
    channel = object_for_edit(p, AlertChannel.objects.select_related("tenant"), pk)
    form = forms.AlertChannelForm(request.POST or None, principal=p, instance=channel)
    if request.method == "POST" and form.is_valid():
        ok, saved = attempt(form, lambda: _save(Actor.from_request(request), channel, form),
                            obj=channel, kind="alert channel")
        if ok:
            messages.success(request, f"Alert channel {saved.name} saved.")
            return redirect("dashboard:alerts")
    return render(request, "dashboard/alerts/channel_form.html", {"form": form, "channel": channel})


@login_required
@require_POST
def channel_delete(request, pk):
    p = get_principal(request)
    channel = p.get_or_404(AlertChannel.objects.select_related("tenant"), id=pk)
    require_edit(p, channel.tenant_id)
    try:
        with locked_current(channel, request.POST.get("etag") or None) as current:
            delete_channel(Actor.from_request(request), current)
    except PreconditionFailed:
        messages.error(request, CONFLICT.format(kind="alert channel", detail="", verb="delete"))
        return redirect("dashboard:channel_edit", pk=channel.pk)
    messages.success(request, f"Alert channel {channel.name} deleted.")
    return redirect("dashboard:alerts")
