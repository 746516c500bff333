"""Error pages: a route's own (its owner's editors) and the platform defaults (staff),
edited with a live preview in a sandboxed frame, saved through preview → publish."""
from __future__ import annotations

from csp.decorators import csp
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.urls import reverse
from django.utils.html import escape
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST

from controlplane.audit.services import Actor
from controlplane.proxy import errorpages, services
from controlplane.proxy.models import Route
from controlplane.tenancy.access import principal as get_principal
from dataplane.errorpages import check_page

from ..errorpageforms import ErrorPagesForm
from .common import object_for_edit, require_staff
from .flows import change_flow, fresh


def _page(request, *, form, obj, action, title, success_url, context):
    return change_flow(request, form=form, obj=obj, kind="route" if obj is not None else "error pages",
                       action=action,
                       template="dashboard/error_pages/edit.html",
                       context={**context, "placeholders": errorpages.PLACEHOLDERS},
                       title=title, success_url=success_url)


@login_required
def platform_error_pages(request):
    p = get_principal(request)
    require_staff(p)
    stored = {s: page.body for s, page in errorpages.platform_pages().items()}
    form = ErrorPagesForm(request.POST or None, statuses=errorpages.STATUSES, pages=stored)
    actor = Actor.from_request(request)

    def action(note):
        errorpages.save_platform_pages(actor, form.pages(), note=note)
        return None

    return _page(request, form=form, obj=None, action=action, title="Platform error pages",
                 success_url=lambda _: reverse("dashboard:error_pages"),
                 context={"route": None, "back": reverse("dashboard:routes")})


@login_required
def route_error_pages(request, pk):
    p = get_principal(request)
    route = object_for_edit(p, Route.objects.select_related("tenant"), pk)
    pages = {int(k): v for k, v in (route.error_pages or {}).items() if str(k).isdigit()}
    form = ErrorPagesForm(request.POST or None, statuses=errorpages.ROUTE_STATUSES, pages=pages, instance=route)
    actor = Actor.from_request(request)

    def action(note):
        return services.update_route(actor, fresh(route), note=note, if_match=form.if_match,
                                     **form.service_fields())

    return _page(request, form=form, obj=route, action=action, title=f"Error pages of route {route.name}",
                 success_url=lambda obj: reverse("dashboard:route", args=[obj.pk]),
                 context={"route": route, "back": reverse("dashboard:route", args=[route.pk]),
                          "platform_statuses": sorted(errorpages.platform_pages())})


# The frame's own policy: the page's inline styles render, nothing runs, nothing is sent
# anywhere but images; and only the dashboard itself may frame it.
FRAME_CSP = {"default-src": ["'none'"], "style-src": ["'unsafe-inline'"], "img-src": ["data:", "https:"],
             "font-src": ["data:"], "sandbox": [True], "form-action": ["'none'"], "base-uri": ["'none'"],
             "frame-ancestors": ["'self'"]}


@login_required
@require_POST
@xframe_options_sameorigin
@csp(FRAME_CSP)
def error_page_preview(request, status):
    """The live preview of one text area, shown in its sandboxed frame: the page with
    sample values, the default page when the area is empty, or why the nodes would
    refuse it."""
    if status not in errorpages.STATUSES:
        status = 502
    body = request.POST.get(f"page_{status}", "")
    problems = check_page(status, body) if body.strip() else []
    if problems:
        items = "".join(f"<li>{escape(p)}</li>" for p in problems)
        html = ('<!doctype html><meta charset="utf-8"><body style="font-family:sans-serif;color:#a40e26">'
                f"<p>The nodes would refuse this page:</p><ul>{items}</ul></body>")
    else:
        html = errorpages.preview(status, body if body.strip() else None)
    return HttpResponse(html, content_type="text/html; charset=utf-8")
