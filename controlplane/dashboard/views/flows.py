"""The flows the edit pages share: preview → confirm → publish for routes and pools,
confirm → delete for routes, pools and certificates, and what any edit form does
when someone else saved the object first (optimistic concurrency: the form carries
the version it showed, the service refuses a write over another version)."""
from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.http import Http404
from django.shortcuts import redirect, render

from controlplane.audit.services import Actor
from controlplane.proxy import services
from controlplane.tenancy.access import principal as get_principal

from .. import changes as change_preview
from .. import forms
from ..errors import add_validation_errors, error_messages, flash_validation_errors
from .common import note, return_url

CONFLICT = ("Someone else changed this {kind} while you were editing it.{detail} Review and {verb} again: "
            "that applies your change over their version.")
STALE_PREVIEW = "The configuration changed since the preview. Review the new diff and confirm again."


def fresh(obj):
    """A new instance of ``obj``'s stored row: a service call (or a rolled-back preview
    of one) changes the instance it is given, not the one the page shows."""
    return type(obj).objects.get(pk=obj.pk)


def differing_fields(current, fields: dict) -> list[str]:
    """The names in ``fields`` whose value is not the one ``current`` stores."""
    names = []
    for name, value in fields.items():
        stored = getattr(current, current._meta.get_field(name).attname)
        if getattr(value, "pk", value) != stored:
            names.append(name)
    return names


def report_conflict(form, obj, kind: str, verb: str = "save") -> None:
    """After ``PreconditionFailed``: an error above ``form`` naming the fields whose
    stored value now differs from the user's, and the form re-based on the stored
    version, so that submitting it again deliberately overwrites that version."""
    current = type(obj).objects.filter(pk=obj.pk).first()
    if current is None:
        raise Http404(f"this {kind} was deleted meanwhile")
    differing = differing_fields(current, form.edited_fields())
    detail = f" The stored values differ from yours in: {', '.join(differing)}." if differing else ""
    form.add_error(None, CONFLICT.format(kind=kind, detail=detail, verb=verb))
    form.rebase(services.etag_of(current))


def attempt(form, call, *, obj=None, kind: str = "", verb: str = "save"):
    """(True, ``call()``) or, when the service refuses, (False, None) with the
    refusal shown on ``form``."""
    try:
        return True, call()
    except ValidationError as exc:
        add_validation_errors(form, exc)
    except services.PreconditionFailed:
        report_conflict(form, obj, kind, verb)
    except ObjectDoesNotExist:
        raise Http404(f"this {kind} was deleted meanwhile") from None
    return False, None


def refused(request, call, kind: str, verb: str) -> bool:
    """Run a service call of a one-button form; True when it was refused (the reason
    flashed)."""
    try:
        call()
    except services.PreconditionFailed:
        messages.error(request, CONFLICT.format(kind=kind, detail="", verb=verb))
    except ValidationError as exc:
        flash_validation_errors(request, exc)
    else:
        return False
    return True


def _preview(request, call, before):
    result = change_preview.preview(call, before=before)
    result.changes = change_preview.filter_changes(result.changes, get_principal(request))
    return result


def change_flow(request, *, form, obj, kind, action, template, context, success_url, title):
    """``action(note)`` calls the service and returns the object. POST ``_action=preview``
    (the default) shows the diff of what the nodes would run; ``_action=publish``
    with the preview's digest makes the change, unless the would-be config differs
    from the one previewed (then the new diff is shown to confirm again)."""
    preview = None
    if request.method == "POST" and form.is_valid():
        before = services.serialize(obj) if obj else None
        ok, preview = attempt(form, lambda: _preview(request, lambda: action(""), before), obj=obj, kind=kind)
        if ok and request.POST.get("_action") == "publish":
            if request.POST.get("digest") != preview.digest:
                messages.warning(request, STALE_PREVIEW)
            else:
                ok, saved = attempt(form, lambda: action(note(request)), obj=obj, kind=kind)
                if ok:
                    messages.success(request, f"{title}: saved and published." if not preview.empty
                                     else f"{title}: saved (the config the nodes run did not change).")
                    return redirect(success_url(saved))
                preview = None
    return render(request, template, {**context, "form": form, "preview": preview, "title": title})


def delete_flow(request, *, obj, kind, delete, success_url):
    """``delete(actor, obj, note=, if_match=)`` is the service; the page previews what
    the nodes lose and deletes when confirmed with that preview's digest."""
    form = forms.DeleteForm(request.POST or None, instance=obj)
    actor = Actor.from_request(request)
    try:
        preview = _preview(request, lambda: delete(actor, fresh(obj)), services.serialize(obj))
    except ValidationError as exc:
        preview, errors = None, error_messages(exc)
    else:
        errors = []
    if request.method == "POST" and preview is not None and form.is_valid():
        if request.POST.get("digest") != preview.digest:
            messages.warning(request, STALE_PREVIEW)
        else:
            ok, _ = attempt(form, lambda: delete(actor, fresh(obj), note=note(request), if_match=form.if_match),
                            obj=obj, kind=kind, verb="delete")
            if ok:
                messages.success(request, f"{kind.title()} {obj} deleted.")
                return redirect(success_url)
    return render(request, "dashboard/confirm_delete.html", {
        "obj": obj, "kind": kind, "preview": preview, "errors": errors, "form": form,
        "cancel_url": return_url(request, request.GET.get("back"), success_url),
    })
