"""Alerts and the channels that deliver them."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from controlplane.alerts.models import Alert, AlertChannel
from controlplane.alerts.services import count_open_alerts, delete_channel, save_channel, send_test
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
    channels = list(p.scope(AlertChannel.objects.select_related("tenant")))
    return render(request, "dashboard/alerts/list.html", {
        "page": page(request, qs), "kind": kind, "kinds": [k for k, _ in Alert.KINDS],
        "channels": channels, "can_create": p.can_edit_any,
        "editable": {c.pk for c in channels if p.can_edit(c.tenant_id)},
    })


def _save(actor, channel, form) -> AlertChannel:
    secret = form.cleaned_data.get("secret") or None
    if form.cleaned_data["kind"] != AlertChannel.WEBHOOK:
        secret = None
    if channel is None:
        return save_channel(actor, AlertChannel(**form.channel_fields()), secret=secret,
                            send_open_alerts=bool(form.cleaned_data.get("send_open_alerts")))
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
    return render(request, "dashboard/alerts/channel_form.html", {
        "form": form, "channel": channel,
        "open_count": _open_count(form) if channel is None else None})


def _open_count(form) -> int:
    """Open alerts a new channel of the form's initial owner would get (platform: all)."""
    tenant_id = form.fields["tenant"].initial or None
    return count_open_alerts(int(tenant_id) if tenant_id else None)


@login_required
@require_POST
def channel_test(request, pk):
    """Send a test message through the channel now; the result shows in the page (the
    row's result cell with htmx, a message after the redirect without JavaScript)."""
    p = get_principal(request)
    channel = p.get_or_404(AlertChannel.objects.select_related("tenant"), id=pk)
    require_edit(p, channel.tenant_id)
    result = send_test(Actor.from_request(request), channel)
    if request.headers.get("HX-Request"):
        return render(request, "dashboard/alerts/_test_result.html", {"result": result, "channel": channel})
    text = f"Test message through {channel.name}: {'sent' if result.ok else 'failed'}, {result.message}"
    (messages.success if result.ok else messages.error)(request, text)
    back = request.POST.get("next") or ""
    if back == "edit":
        return redirect("dashboard:channel_edit", pk=channel.pk)
    return redirect("dashboard:alerts")


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
