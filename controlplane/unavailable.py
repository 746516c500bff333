"""A dependency that is down answers ``503`` with ``Retry-After``, never Django's 500 page.

``dependency_down(exc)`` names the dependency an exception says is unreachable: the
database (Django's ``OperationalError`` / ``InterfaceError``: refused, dropped, not
accepting connections) or the Celery broker (kombu's ``OperationalError``). The API
answers it as JSON through its DRF exception handler (``controlplane.api.errors``);
``DependencyUnavailableMiddleware`` answers it for every other view: JSON under
``/api/`` (views outside DRF), the dashboard's own 503 page elsewhere. That page is
rendered without the request, because the context processors (user, messages) would
read the session from the database that is down.
"""
from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError

log = logging.getLogger("switchyard.unavailable")

RETRY_AFTER_SECONDS = 5
API_PREFIX = "/api/"


def dependency_down(exc: BaseException) -> str | None:
    """"database", "broker" or "cache" when ``exc`` says that dependency cannot be reached, else None."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return "database"
    if isinstance(exc, BrokerError):
        return "broker"
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return "cache"  # Django's cache in production (REDIS_URL): allauth's rate limits
    return None


def message(dependency: str) -> str:
    return f"The {dependency} is unavailable; try again in a few seconds."


def log_outage(request, dependency: str, exc: BaseException) -> None:
    log.warning("%s %s answered 503: the %s is unavailable (%s)", request.method, request.path, dependency,
                f"{type(exc).__name__}: {exc}".strip())


class DependencyUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        dependency = dependency_down(exception)
        if dependency is None:
            return None
        log_outage(request, dependency, exception)
        if request.path.startswith(API_PREFIX):
            response = JsonResponse({"detail": message(dependency)}, status=503)
        else:
            page = render_to_string("503.html", {"dependency": dependency, "message": message(dependency),
                                                 "retry_after": RETRY_AFTER_SECONDS})
            response = HttpResponse(page, status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
