"""Configuration versions (list, detail, diff, rollback) and the audit log."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from controlplane.audit.models import AuditEntry
from controlplane.audit.services import Actor
from controlplane.publishing import publisher
from controlplane.publishing.models import ConfigVersion
from controlplane.tenancy.access import principal as get_principal

from .. import changes as change_preview
from ..errors import flash_validation_errors
from .common import note, page, require_staff

AUDIT_FILTERS = ("object_type", "action", "actor")


def _visible_versions(p):
    qs = ConfigVersion.objects.defer("snapshot")
    if p.staff:
        return qs
    numbers = p.scope(AuditEntry.objects.filter(config_version__isnull=False)).values("config_version")
    return qs.filter(number__in=numbers)


def _any_version_or_404(number):
    try:
        return ConfigVersion.objects.get(number=int(number))
    except (ConfigVersion.DoesNotExist, ValueError, TypeError):
        raise Http404("no such version") from None


def _version_or_404(p, number):
    version = _any_version_or_404(number)
    if not p.staff and not _visible_versions(p).filter(pk=version.pk).exists():
        raise Http404("no such version")
    return version


@login_required
def change_list(request):
    p = get_principal(request)
    versions = _visible_versions(p)
    shown = page(request, versions)
    summaries = change_preview.version_summaries(list(shown), p)
    for v in shown:
        v.summary = summaries.get(v.number, [])
    return render(request, "dashboard/changes/list.html", {
        "page": shown, "current": publisher.current_version(), "can_rollback": p.staff,
        "numbers": list(versions.values_list("number", flat=True)[:200]),
    })


@login_required
def change_detail(request, number):
    p = get_principal(request)
    version = _version_or_404(p, number)
    previous = ConfigVersion.objects.filter(number__lt=version.number).order_by("-number").first()
    return render(request, "dashboard/changes/detail.html", {
        "version": version, "previous": previous, "changes": change_preview.scoped_diff(previous, version, p),
        "entries": p.scope(AuditEntry.objects.filter(config_version=version.number)),
        "current": publisher.current_version(), "can_rollback": p.staff,
    })


@login_required
def change_diff(request):
    """Tenant members may compare any two versions: they only see their own objects in it."""
    p = get_principal(request)
    find = (lambda n: _version_or_404(p, n)) if p.staff else _any_version_or_404
    a, b = find(request.GET.get("a")), find(request.GET.get("b"))
    return render(request, "dashboard/changes/diff.html", {
        "a": a, "b": b, "changes": change_preview.scoped_diff(a, b, p)})


@login_required
def change_restore(request, number):
    """Restore this version: what would change from the live version to it, shown in the
    page, with a note, before anything happens (the form posts to ``change_rollback``)."""
    p = get_principal(request)
    version = _version_or_404(p, number)
    require_staff(p)
    current = publisher.current_version()
    return render(request, "dashboard/changes/restore.html", {
        "version": version, "current": current,
        "changes": change_preview.scoped_diff(current, version, p) if current else [],
        "note": publisher.restore_note(version),
    })


@login_required
@require_POST
def change_rollback(request, number):
    p = get_principal(request)
    version = _version_or_404(p, number)
    require_staff(p)  # a rollback restores every tenant's routes: platform staff only
    try:
        new = publisher.rollback(Actor.from_request(request), version.number,
                                 publisher.restore_note(version, note(request)))
    except ValidationError as exc:
        flash_validation_errors(request, exc, prefix="Rollback refused: ")
        return redirect("dashboard:changes")
    if new is None:
        messages.info(request, f"The live configuration already is version {version.number}.")
    else:
        messages.success(request, f"Rolled back to version {version.number}: now live as version {new.number}.")
    return redirect("dashboard:changes")


def _filtered_audit(qs, filters: dict):
    for name in AUDIT_FILTERS:
        if filters[name]:
            qs = qs.filter(**{name: filters[name]})
    if filters["q"]:
        qs = qs.filter(Q(object_repr__icontains=filters["q"]) | Q(note__icontains=filters["q"]))
    return qs


@login_required
def audit_log(request):
    p = get_principal(request)
    visible = p.scope(AuditEntry.objects.all())
    filters = {k: (request.GET.get(k) or "").strip() for k in (*AUDIT_FILTERS, "q")}
    entries = page(request, _filtered_audit(p.scope(AuditEntry.objects.select_related("tenant")), filters))
    for entry in entries:
        entry.changes = change_preview.object_diff(entry.before, entry.after)
    return render(request, "dashboard/audit.html", {
        "page": entries, "filters": filters,
        "object_types": sorted(set(visible.values_list("object_type", flat=True))),
        "actions": sorted(set(visible.values_list("action", flat=True))),
    })
