"""``config/export`` and ``config/apply``: the configuration as a file, over the API.

The same rules as every other write: a tenant token exports and applies within its
own tenant only, each change needs the role the same change needs through its own
resource, and platform objects need staff. The work is ``controlplane.configio``'s.
"""
from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.parsers import BaseParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.audit.services import Actor
from controlplane.configio import apply as applying, document, export, keys
from controlplane.configio.scope import ScopeError, resolve

from . import errors
from .authentication import BearerTokenAuthentication, DashboardSessionAuthentication
from .permissions import principal_for
from .schema import SwitchyardAutoSchema

PASSPHRASE_HEADER = "X-Config-Passphrase"
CHANGE_NOTE_HEADER = "X-Change-Note"
CONTENT_TYPES = {"yaml": "application/yaml; charset=utf-8", "json": "application/json"}

TENANT = OpenApiParameter("tenant", OpenApiTypes.STR, OpenApiParameter.QUERY,
                          description="The tenant (slug) whose configuration this is; default: the file's own "
                                      "`tenant`, else your only tenant, else (staff) the whole platform.")
PASSPHRASE = OpenApiParameter(PASSPHRASE_HEADER, OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
                              description="Passphrase of the private keys in the file (at least 8 characters).")


FLAG_VALUES = {"1": True, "true": True, "0": False, "false": False}


def flag(request, name: str) -> bool:
    """A yes/no query parameter: absent, 1/true or 0/false; anything else is a 400."""
    raw = request.query_params.get(name)
    if raw is None:
        return False
    if raw.lower() not in FLAG_VALUES:
        raise ValidationError({name: ["must be 1 or 0 (true or false)"]})
    return FLAG_VALUES[raw.lower()]


class RawFile(BaseParser):
    """The body as bytes: YAML or JSON, read by ``configio.document``."""
    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream.read() if stream is not None else b""


class ConfigView(APIView):
    authentication_classes = [BearerTokenAuthentication, DashboardSessionAuthentication]
    permission_classes = [IsAuthenticated]
    schema = SwitchyardAutoSchema()

    def get_exception_handler(self):
        return errors.exception_handler

    def passphrase(self) -> bytes | None:
        value = self.request.headers.get(PASSPHRASE_HEADER)
        return value.encode() if value else None


class ConfigExportView(ConfigView):
    @extend_schema(
        operation_id="config_export", summary="The configuration (or one tenant's) as a YAML or JSON file",
        parameters=[
            TENANT,
            OpenApiParameter("format", OpenApiTypes.STR, OpenApiParameter.QUERY, enum=list(document.FORMATS),
                             description="yaml (default) or json"),
            OpenApiParameter("include_keys", OpenApiTypes.STR, OpenApiParameter.QUERY, enum=list(FLAG_VALUES),
                             description="Add the certificates' private keys and the webhook secrets, encrypted "
                                         f"with the passphrase of the `{PASSPHRASE_HEADER}` header (editor role or "
                                         "staff)."),
            PASSPHRASE,
        ],
        responses={(200, "application/yaml"): OpenApiTypes.OBJECT, (200, "application/json"): OpenApiTypes.OBJECT,
                   400: OpenApiResponse(OpenApiTypes.OBJECT, description="A bad `format` or passphrase"),
                   404: OpenApiResponse(OpenApiTypes.OBJECT, description="No such tenant (or another's)")})
    def get(self, request):
        principal = principal_for(request)
        try:
            scope = resolve(principal, request.query_params.get("tenant") or None)
        except ScopeError as exc:
            raise NotFound(str(exc)) from None
        fmt = request.query_params.get("format", "yaml")
        if fmt not in document.FORMATS:
            raise ValidationError({"format": [f"must be one of {', '.join(document.FORMATS)}"]})
        passphrase = None
        if flag(request, "include_keys"):
            if not (principal.staff or (scope.tenant is not None and principal.can_edit(scope.tenant))):
                raise PermissionDenied("private keys need the editor or owner role")
            try:
                passphrase = keys.check_passphrase(self.passphrase())
            except keys.KeyProblem as exc:
                raise ValidationError({PASSPHRASE_HEADER: [str(exc)]}) from None
        text = document.dump(export.export(scope.tenant, passphrase=passphrase), fmt)
        return HttpResponse(text, content_type=CONTENT_TYPES[fmt])


class FieldChange(serializers.Serializer):
    field = serializers.CharField()
    before = serializers.JSONField()
    after = serializers.JSONField()


class PlannedChange(serializers.Serializer):
    action = serializers.ChoiceField(choices=["create", "update", "delete"])
    kind = serializers.CharField(help_text="tenant, certificate, pool, route or alert channel")
    object = serializers.CharField(help_text="e.g. `route shop/api`")
    path = serializers.CharField(help_text="Where the object is in the file, e.g. `routes[3]`")
    fields = FieldChange(many=True, help_text="What an update changes, field by field")


class Problem(serializers.Serializer):
    path = serializers.CharField(help_text="Where in the file, e.g. `routes[3].hosts`")
    object = serializers.CharField(help_text="The object it concerns, e.g. `route shop/api`")
    message = serializers.CharField()


class ApplyResult(serializers.Serializer):
    dry_run = serializers.BooleanField()
    applied = serializers.BooleanField(help_text="Changes were stored")
    version = serializers.IntegerField(allow_null=True, help_text="The one new config version, if any")
    summary = serializers.DictField(child=serializers.IntegerField(), help_text="create, update, delete counts")
    changes = PlannedChange(many=True)
    errors = Problem(many=True, help_text="Every problem; when there is any, nothing was changed")


class ConfigApplyView(ConfigView):
    parser_classes = [RawFile]

    @extend_schema(
        operation_id="config_apply",
        summary="Make the configuration what the file says: one version, or nothing with every problem listed",
        request={"application/yaml": OpenApiTypes.STR, "application/json": OpenApiTypes.OBJECT},
        parameters=[
            TENANT,
            OpenApiParameter("dry_run", OpenApiTypes.STR, OpenApiParameter.QUERY, enum=list(FLAG_VALUES),
                             description="Return the diff and the problems; change nothing."),
            OpenApiParameter("prune", OpenApiTypes.STR, OpenApiParameter.QUERY, enum=list(FLAG_VALUES),
                             description="Delete what the file's sections do not name (within the scope)."),
            PASSPHRASE,
        ],
        responses={200: ApplyResult, 400: OpenApiResponse(
            OpenApiTypes.OBJECT,
            description="Refused: the ApplyResult shape with `errors`, or field errors for a bad query parameter")})
    def post(self, request):
        result = applying.apply(
            request.data or b"", principal=principal_for(request), actor=Actor.from_request(request),
            tenant=request.query_params.get("tenant") or None,
            note=request.headers.get(CHANGE_NOTE_HEADER, "").strip(), dry_run=flag(request, "dry_run"),
            prune=flag(request, "prune"), passphrase=self.passphrase())
        return Response(result.as_dict(), status=status.HTTP_200_OK if result.ok else status.HTTP_400_BAD_REQUEST)
