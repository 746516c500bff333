"""Django ``ValidationError`` (a message dict keyed by model field) → DRF 400 keyed by API field;
a stale ``If-Match`` → 412 with the current ``ETag``; a dependency that is down
(database, broker) → JSON 503 with ``Retry-After``."""
from __future__ import annotations

from django.core.exceptions import NON_FIELD_ERRORS, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.views import exception_handler as drf_exception_handler

from controlplane import unavailable
from controlplane.proxy.services import PreconditionFailed

from .serializers import HEALTH_CHECK_FIELDS

# model field → (API field, sub-field) for fields the API nests
NESTED = {model: ("health_check", api) for api, model in HEALTH_CHECK_FIELDS.items()}
NESTED.update({f"max_{name}": ("quotas", name) for name in ("routes", "pools", "targets", "certificates")})
RENAMED = {NON_FIELD_ERRORS: "non_field_errors", "pool_id": "pool", "certificate_id": "certificate"}


def drf_errors(exc: DjangoValidationError) -> dict:
    if hasattr(exc, "error_dict"):
        raw = exc.message_dict
    else:
        raw = {"non_field_errors": exc.messages}
    out: dict = {}
    for field, messages in raw.items():
        if field in NESTED:
            outer, inner = NESTED[field]
            out.setdefault(outer, {}).setdefault(inner, []).extend(messages)
        else:
            out.setdefault(RENAMED.get(field, field), []).extend(messages)
    return out


def to_drf(exc: DjangoValidationError) -> ValidationError:
    return ValidationError(drf_errors(exc))


class TooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


class DependencyUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "service_unavailable"
    wait = unavailable.RETRY_AFTER_SECONDS  # DRF's handler sends it as Retry-After


class StaleWrite(APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = ("The object changed since you read it (If-Match does not match its ETag); nothing was "
                      "changed. GET it again, reapply your change and retry.")
    default_code = "precondition_failed"


def exception_handler(exc, context):
    """DRF's handler, plus Django ``ValidationError`` from the services as a 400, an
    oversized body (``DATA_UPLOAD_MAX_MEMORY_SIZE``) as a JSON 413, and an unreachable
    database or broker as a JSON 503."""
    dependency = unavailable.dependency_down(exc)
    if dependency is not None:
        unavailable.log_outage(context["request"], dependency, exc)
        exc = DependencyUnavailable(unavailable.message(dependency))
    elif isinstance(exc, DjangoValidationError):
        exc = to_drf(exc)
    elif isinstance(exc, RequestDataTooBig):
        exc = TooLarge()
    elif isinstance(exc, PreconditionFailed):
        response = drf_exception_handler(StaleWrite(), context)
        response["ETag"] = exc.current_etag
        return response
    return drf_exception_handler(exc, context)
