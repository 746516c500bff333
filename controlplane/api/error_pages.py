"""/api/v1/error-pages/: the platform default error pages (platform staff only).

A route's own pages are the route field ``error_pages``. Writes go to
``controlplane.proxy.errorpages`` (validation, versions, audit).
"""
from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from controlplane.proxy import errorpages
from controlplane.proxy.models import ErrorPage

from .permissions import STAFF, require
from .serializers import ServiceModelSerializer, StrictCharField
from .views import Create, Destroy, ServiceViewSet, Update


class ErrorPageSerializer(ServiceModelSerializer):
    status = serializers.ChoiceField(choices=list(errorpages.STATUSES), help_text=(
        "The generated response this page answers: 403 (access list, WebSocket refused), 404 (no route), "
        "429 (rate limit), 502, 503 (no healthy target, maintenance), 504. Not changeable."))
    body = StrictCharField(trim_whitespace=False, help_text=(
        "HTML (at most 64 KiB of UTF-8). Placeholders {{request_id}}, {{status}}, {{reason}}, {{error}} "
        "(the Proxy-Status error type) and {{details}} are filled in HTML-escaped; any other is refused. "
        "Clients whose Accept asks for JSON get {status, error, details, request_id} instead."))

    class Meta:
        model = ErrorPage
        fields = ["status", "body", "created", "updated"]
        read_only_fields = ["created", "updated"]


@extend_schema_view(
    list=extend_schema(summary="The platform default error pages (staff)"),
    create=extend_schema(summary="Set the platform default page of a status (staff)"),
    update=extend_schema(summary="Replace a platform default page (staff)"),
    partial_update=extend_schema(summary="Change a platform default page (staff)"),
    destroy=extend_schema(summary="Remove a platform default page: the built-in one answers again (staff)"),
)
class ErrorPageViewSet(Create, Update, Destroy, ServiceViewSet):
    """Platform default error pages, by status: what the nodes answer with for the
    responses they generate where a route has no page of its own (and for 404 no route)."""
    queryset = ErrorPage.objects.all()
    serializer_class = ErrorPageSerializer
    tenant_field = None
    write_level = STAFF
    lookup_field = "status"
    pagination_class = None

    def create_object(self, data):
        require(self.request, None, STAFF)
        if ErrorPage.objects.filter(status=data["status"]).exists():
            raise ValidationError({"status": [f"the platform already has a {data['status']} page; "
                                              f"change it with PUT error-pages/{data['status']}/"]})
        return errorpages.save_error_page(self.actor, data["status"], data["body"], note=self.note)

    def update_object(self, page, data):
        if data.get("status", page.status) != page.status:
            raise ValidationError({"status": ["cannot be changed"]})
        return errorpages.save_error_page(self.actor, page.status, data.get("body", page.body), note=self.note)

    def delete_object(self, page):
        errorpages.delete_error_page(self.actor, page, note=self.note)
