"""Configuration as code in the dashboard: download the export, upload a file, see the
dry-run diff, apply exactly what was previewed.

Every step is a ``controlplane.configio`` call, as in the API and ``manage.py config``.
The page is for platform staff (the whole platform or any tenant) and tenant owners
(their own tenant's file). The Apply form carries the file itself (base64, so no
byte changes on the way) and the preview's ``guard``: the apply checks it under the
publish lock and, when the configuration changed since the preview, applies nothing
and shows the new diff instead.
"""
from __future__ import annotations

import base64
import binascii

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from controlplane.audit.services import Actor
from controlplane.configio import apply as applying, document, export, scope as scopes
from controlplane.tenancy.access import principal as get_principal

from .common import note

MAX_BYTES = 1_500_000   # the Apply form carries the file in base64, under Django's 2.5 MB form limit
PLATFORM = ""
CONTENT_TYPES = {"yaml": "application/yaml; charset=utf-8", "json": "application/json"}


def _principal(request):
    p = get_principal(request)
    if not scopes.may_use_dashboard(p):
        raise PermissionDenied("the configuration file is for platform staff and tenant owners")
    return p


def _scope_choices(p) -> list[tuple[str, str]]:
    choices = [(PLATFORM, "the whole platform")] if p.staff else []
    return choices + [(t.slug, f"tenant {t.slug}") for t in scopes.dashboard_tenants(p)]


def _tenant(p, slug: str | None) -> str | None:
    """The tenant slug asked for, if this user may use it here (404 otherwise); None: the platform."""
    if not slug:
        if p.staff:
            return None
        slug = _scope_choices(p)[0][0]
    if slug not in {value for value, _ in _scope_choices(p)}:
        raise Http404("not found")
    return slug


class UploadForm(forms.Form):
    scope = forms.ChoiceField(label="Scope", required=False)
    file = forms.FileField(label="Configuration file (YAML or JSON)", required=False)
    text = forms.CharField(label="…or paste it here", required=False,
                           widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}))
    prune = forms.BooleanField(label="Prune: delete what the file's sections do not name", required=False)

    def __init__(self, *args, principal, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["scope"].choices = _scope_choices(principal)

    def clean(self):
        data = super().clean()
        upload = data.get("file")
        if upload is not None:
            if upload.size > MAX_BYTES:
                raise forms.ValidationError(f"the file is larger than {MAX_BYTES // 1000} kB")
            raw = upload.read()
        else:
            raw = (data.get("text") or "").encode()
            if len(raw) > MAX_BYTES:
                raise forms.ValidationError(f"the text is larger than {MAX_BYTES // 1000} kB")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise forms.ValidationError("the file is not UTF-8 text") from None
        if not text.strip():
            raise forms.ValidationError("choose a file or paste its text")
        data["document"] = text.replace("\r\n", "\n")
        return data


def _encode(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _decode(value: str) -> str:
    try:
        return base64.b64decode(value.encode(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise PermissionDenied("the previewed file did not come back intact; upload it again") from None


def _preview(request, p, text: str, tenant: str | None, prune: bool, form=None, stale: bool = False):
    result = applying.apply(text, principal=p, actor=Actor.from_request(request), tenant=tenant,
                            dry_run=True, prune=prune)
    scope_label = f"tenant {tenant}" if tenant else "the platform (or the tenant the file names)"
    return _page(request, p, form=form, preview={
        "result": result, "summary": result.as_dict()["summary"], "document": _encode(text), "tenant": tenant or "",
        "prune": prune, "stale": stale, "scope_label": scope_label,
    })


def _page(request, p, form=None, preview=None, status=200):
    return render(request, "dashboard/config/page.html", {
        "form": form or UploadForm(principal=p, initial={"scope": _scope_choices(p)[0][0]}),
        "scopes": _scope_choices(p), "formats": document.FORMATS, "preview": preview,
    }, status=status)


@login_required
def config_page(request):
    """GET: download and upload. POST: the uploaded file's dry run."""
    p = _principal(request)
    if request.method != "POST":
        return _page(request, p)
    form = UploadForm(request.POST, request.FILES, principal=p)
    if not form.is_valid():
        return _page(request, p, form=form, status=400)
    tenant = _tenant(p, form.cleaned_data.get("scope"))
    return _preview(request, p, form.cleaned_data["document"], tenant, form.cleaned_data["prune"], form=form)


@login_required
def config_export(request):
    p = _principal(request)
    tenant = _tenant(p, request.GET.get("tenant"))
    fmt = request.GET.get("format", "yaml")
    if fmt not in document.FORMATS:
        raise Http404("no such format")
    scope = scopes.resolve(p, tenant) if tenant else scopes.Scope(p)
    response = HttpResponse(document.dump(export.export(scope.tenant), fmt), content_type=CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="switchyard-{tenant or "platform"}.{fmt}"'
    return response


@login_required
@require_POST
def config_apply(request):
    p = _principal(request)
    text = _decode(request.POST.get("document", ""))
    tenant = _tenant(p, request.POST.get("tenant"))
    prune = request.POST.get("prune") == "1"
    result = applying.apply(text, principal=p, actor=Actor.from_request(request), tenant=tenant, note=note(request),
                            prune=prune, expect=request.POST.get("guard", ""))
    if result.stale:
        return _preview(request, p, text, tenant, prune, stale=True)
    if not result.ok:
        messages.error(request, f"Nothing was applied: {len(result.problems)} problem(s).")
        return _preview(request, p, text, tenant, prune)
    if result.version is not None:
        messages.success(request, f"Applied: {_counts(result)}; version {result.version}.")
    elif result.changes:
        messages.success(request, f"Applied: {_counts(result)}; no new version (the routing config is the same).")
    else:
        messages.info(request, "Nothing to change: the configuration already is what the file says.")
    return redirect("dashboard:config")


def _counts(result) -> str:
    c = result.as_dict()["summary"]
    return f"{c['create']} created, {c['update']} changed, {c['delete']} deleted"
