"""OpenAPI details common to every operation: the ``X-Change-Note`` header on writes,
``If-Match`` on changes of one object, and the error responses (400 naming the
fields, 401, 403, 404, 412) the API really gives."""
from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter

SAFE = ("GET", "HEAD", "OPTIONS")

CHANGE_NOTE = OpenApiParameter(
    "X-Change-Note", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
    description="Why this change: stored as the note of the audit entry and of the config version it produces.")

FIELD_ERRORS = {
    "type": "object",
    "description": "Messages by field name (nested objects for nested fields; `non_field_errors` for the "
                   "object as a whole).",
    "additionalProperties": True,
}
IF_MATCH = OpenApiParameter(
    "If-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
    description="The `ETag` of the object as you read it: the write is refused with 412 (and changes nothing) "
                "when the object has changed since.")
ONE_OBJECT_WRITES = ("update", "partial_update", "destroy")

DETAIL = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": True,
}


class SwitchyardAutoSchema(AutoSchema):
    def get_override_parameters(self):
        params = list(super().get_override_parameters())
        if self.method not in SAFE:
            params.append(CHANGE_NOTE)
        if getattr(self.view, "action", None) in ONE_OBJECT_WRITES:
            params.append(IF_MATCH)
        return params

    def _get_response_bodies(self, direction="response"):
        bodies = super()._get_response_bodies(direction)
        errors = {"401": ("Not authenticated, or an unknown or revoked token", DETAIL),
                  "403": ("The role does not allow this", DETAIL)}
        if self.method not in SAFE or getattr(self.view, "action", None) in ("list", "diff"):
            errors["400"] = ("Invalid input: the messages name the fields", FIELD_ERRORS)
        if self.method in ("POST", "PUT", "PATCH"):
            errors["415"] = ("The body must be JSON (application/json)", DETAIL)
            errors["413"] = ("The body is larger than the server accepts", DETAIL)
        if "{" in self.path:
            errors["404"] = ("Not found (or another tenant's object)", DETAIL)
        if getattr(self.view, "action", None) in ONE_OBJECT_WRITES:
            errors["412"] = ("`If-Match` does not match the object's current `ETag`: it changed since you "
                             "read it; nothing was changed", DETAIL)
        for code, (description, schema) in errors.items():
            if code not in bodies:
                bodies[code] = {"content": {"application/json": {"schema": schema}}, "description": description}
        return bodies
