"""Certificates: list, detail with the chain report, upload, rename or renew, delete."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache

from controlplane.audit.services import Actor
from controlplane.certs import services as cert_services
from controlplane.proxy import services
from controlplane.proxy.models import Certificate
from controlplane.tenancy.access import principal as get_principal

from .. import charts, forms
from .common import note, page, require_edit
from .flows import attempt, delete_flow


@login_required
def certificate_list(request):
    p = get_principal(request)
    qs = p.scope(Certificate.objects.select_related("tenant")).annotate(n_routes=Count("routes")).order_by("name", "id")
    return render(request, "dashboard/certificates/list.html", {
        "page": page(request, qs), "can_create": p.can_edit_any, "now": timezone.now(),
        "expiry_chart": charts.certificate_expiry(p.scope(Certificate.objects.select_related("tenant"))),
    })


@login_required
def certificate_detail(request, pk):
    p = get_principal(request)
    cert = p.get_or_404(Certificate.objects.select_related("tenant"), id=pk)
    return render(request, "dashboard/certificates/detail.html", {
        "cert": cert, "chain": charts.chain_of(cert.certificate_pem), "routes": cert.routes.all(),
        "can_edit": p.can_edit(cert.tenant_id), "now": timezone.now(),
        "expiry_chart": charts.certificate_expiry([cert]),
    })


def _uploaded(request, cert, verb: str) -> None:
    """The success message, naming the warnings the upload was accepted with."""
    count = len(cert.warnings or [])
    detail = f" with {count} warning{'s' if count != 1 else ''}: see below" if count else ""
    messages.success(request, f"Certificate {cert.name} {verb}{detail}.")


# The key the user just sent is shown again when the upload is refused (so it need
# not be pasted or chosen twice); once stored it is write-only and never shown.
# The pages are not cached.

@never_cache
@login_required
def certificate_new(request):
    p = get_principal(request)
    if not p.can_edit_any:
        raise PermissionDenied("your role is read-only")
    form = forms.CertificateForm(request.POST or None, request.FILES or None, principal=p)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        ok, cert = attempt(form, lambda: cert_services.upload_certificate(
            Actor.from_request(request), tenant=data.get("tenant"), name=data.get("name") or "",
            certificate_pem=data.get("certificate_pem") or "", private_key_pem=data.get("private_key_pem") or "",
            ca_bundle_pem=data.get("ca_bundle_pem") or "", note=note(request)))
        if ok:
            _uploaded(request, cert, "uploaded")
            return redirect("dashboard:certificate", pk=cert.pk)
    return render(request, "dashboard/certificates/form.html", {"form": form})


def _replace(actor, cert, form, note_text):
    with services.locked_current(cert, form.if_match) as current:
        return cert_services.replace_certificate(actor, current, note=note_text, **form.replacement(current))


@never_cache
@login_required
def certificate_edit(request, pk):
    p = get_principal(request)
    cert = p.get_or_404(Certificate.objects.select_related("tenant"), id=pk)
    require_edit(p, cert.tenant_id)
    form = forms.CertificateEditForm(request.POST or None, request.FILES or None, instance=cert)
    if request.method == "POST" and form.is_valid():
        ok, saved = attempt(form, lambda: _replace(Actor.from_request(request), cert, form, note(request)),
                        obj=cert, kind="certificate")
        if ok:
            _uploaded(request, saved, "saved")
            return redirect("dashboard:certificate", pk=cert.pk)
    return render(request, "dashboard/certificates/form.html", {"form": form, "cert": cert})


@login_required
def certificate_delete(request, pk):
    p = get_principal(request)
    cert = p.get_or_404(Certificate.objects.select_related("tenant"), id=pk)
    require_edit(p, cert.tenant_id)
    return delete_flow(request, obj=cert, kind="certificate", delete=services.delete_certificate,
                       success_url=reverse("dashboard:certificates"))
