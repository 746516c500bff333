"""The answers Django gives for 400, 403, 404 and 500: JSON under ``/api/`` (an API client
never gets an HTML page), the dashboard's own pages, with its navigation, elsewhere."""
from __future__ import annotations

from django.http import HttpResponse, JsonResponse
from django.template import loader

from controlplane.unavailable import API_PREFIX

DETAILS = {
    400: "Bad request.",
    403: "You do not have permission to do this.",
    404: "Not found.",
    500: "Server error; the event was logged.",
}


def _answer(request, status: int, template: str, context: dict | None = None, with_request: bool = True):
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"detail": DETAILS[status]}, status=status)
    page = loader.render_to_string(template, context or {}, request=request if with_request else None)
    return HttpResponse(page, status=status)


def bad_request(request, exception=None):
    return _answer(request, 400, "400.html")


def permission_denied(request, exception=None):
    return _answer(request, 403, "403.html")


def page_not_found(request, exception=None):
    return _answer(request, 404, "404.html", {"path": request.path})


def server_error(request):
    # Without the request: the context processors may touch what just failed.
    return _answer(request, 500, "500.html", with_request=False)
