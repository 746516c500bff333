"""/api/v1/diagnostics/: the troubleshooting steps, one call each.

Authentication and scoping are the REST API's (Bearer token or dashboard session;
``controlplane.api.permissions.principal_for``). Another tenant's route, target,
certificate or capture, and node status for non-staff, are 404. A node that is not
connected is 409 (503 when no node at all is connected); a node that does not answer
in time is 504.

The live tail (``GET tail/``) is a streaming response: Server-Sent Events
(``text/event-stream``, default) or JSON lines (``?output=jsonl``), served by Daphne
as Django's ``StreamingHttpResponse`` over an async iterator.
"""
from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import PermissionDenied
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.api import errors as api_errors
from controlplane.api.authentication import BearerTokenAuthentication, DashboardSessionAuthentication
from controlplane.api.permissions import principal_for
from controlplane.api.schema import SwitchyardAutoSchema
from controlplane.diagnostics import services, tail
from controlplane.diagnostics.explanations import EXPLANATIONS
from controlplane.diagnostics.services.links import template, url

OBJ = {200: OpenApiTypes.OBJECT}
MINUTES = OpenApiParameter("minutes", OpenApiTypes.INT, OpenApiParameter.QUERY,
                           description="Window in minutes (default 60).")


def _actor(request) -> str:
    token = getattr(request, "auth", None)
    prefix = getattr(token, "prefix", None)
    user = getattr(request, "user", None)
    return f"{user}" + (f" (token {prefix})" if prefix else "")


class DiagnosticsView(APIView):
    authentication_classes = [BearerTokenAuthentication, DashboardSessionAuthentication]
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser]
    schema = SwitchyardAutoSchema()

    @property
    def principal(self):
        return principal_for(self.request)

    def handle_exception(self, exc):
        if isinstance(exc, services.Conflict):
            return Response({"detail": str(exc)}, status=exc.status)
        if isinstance(exc, services.Forbidden):
            exc = PermissionDenied(str(exc))
        if isinstance(exc, DjangoValidationError):
            exc = api_errors.to_drf(exc)
        return super().handle_exception(exc)

    def minutes(self) -> int:
        try:
            return max(1, min(int(self.request.query_params.get("minutes", 60)), 7 * 24 * 60))
        except ValueError:
            raise DjangoValidationError({"minutes": ["must be an integer"]}) from None


class IndexView(DiagnosticsView):
    @extend_schema(responses=OBJ, summary="What the diagnostics API offers")
    def get(self, request):
        return Response({
            "nodes": url("nodes"), "config": url("config"), "tail": url("tail"),
            "probe": url("probe"), "tls_check": url("tls-check"),
            "certificate_chain": template("certificate-chain"),
            "route_errors": template("route-errors"),
            "route_capture": template("route-capture"),
            "route_captures": template("route-captures"),
            "test_request": template("test-request"),
            "capture": template("capture"), "explanations": url("explanations")})


class ExplanationsView(DiagnosticsView):
    @extend_schema(responses=OBJ, summary="What each Proxy-Status type means and what to check")
    def get(self, request):
        return Response(EXPLANATIONS)


class NodeListView(DiagnosticsView):
    @extend_schema(responses=OBJ, operation_id="diagnostics_nodes_list",
                   summary="Status of every node (tenants: names and connection only)")
    def get(self, request):
        return Response({"results": services.nodes_status(self.principal)})


class NodeDetailView(DiagnosticsView):
    @extend_schema(responses=OBJ, summary="Is the node running, and does it run the current config? "
                                         "(versions, last ACK, last NACK errors, uptime, workers)")
    def get(self, request, node):
        n = services.node_or_404(self.principal, node, staff_only=True)
        return Response(services.node_status(n))


class NodeErrorsView(DiagnosticsView):
    @extend_schema(parameters=[MINUTES], responses=OBJ,
                   summary="Why 502/504 on this node: errors by Proxy-Status type, latency")
    def get(self, request, node):
        return Response(services.node_errors(self.principal, node, self.minutes()))


class ConfigCheckView(DiagnosticsView):
    @extend_schema(parameters=[OpenApiParameter("schema_only", OpenApiTypes.BOOL, OpenApiParameter.QUERY)],
                   responses=OBJ, summary="Validate the stored config exactly as a node would "
                                          "(manage.py checkconfig)")
    def get(self, request):
        if not self.principal.staff:
            raise PermissionDenied("only platform staff may do this")
        only = request.query_params.get("schema_only", "") in ("1", "true", "yes")
        return Response(services.config_check(schema_only=only))


class ProbeView(DiagnosticsView):
    @extend_schema(request=OpenApiTypes.OBJECT, responses=OBJ,
                   summary="Probe a target or URL from a node: DNS, TCP, TLS, HTTP, each timed. "
                           "Body: {target: id | url: str, node?, path?, timeout?, insecure?, sni?, tenant?}")
    def post(self, request):
        return Response(services.probe(self.principal, _body(request)))


class TLSCheckView(DiagnosticsView):
    @extend_schema(request=OpenApiTypes.OBJECT, responses=OBJ,
                   summary="Handshake with a node's HTTPS listener for an SNI name and report what it "
                           "presents (chain, expiry, protocol, completeness). Body: {sni, node?}")
    def post(self, request):
        return Response(services.tls_check(self.principal, _body(request)))


class CertificateChainView(DiagnosticsView):
    @extend_schema(responses=OBJ, summary="Chain report of a stored certificate (missing intermediate named)")
    def get(self, request, pk):
        return Response(services.certificate_chain(self.principal, pk))


class RouteErrorsView(DiagnosticsView):
    @extend_schema(parameters=[MINUTES], responses=OBJ,
                   summary="Why 502/504 on this route: errors by Proxy-Status type over time, each "
                           "explained, with links to the probe and the tail; p50/p95/p99 of total "
                           "and upstream time")
    def get(self, request, pk):
        return Response(services.route_errors(self.principal, pk, self.minutes()))


class RouteCaptureView(DiagnosticsView):
    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: OpenApiTypes.OBJECT},
                   summary="Arm the request inspector on this route: its next `count` (<= 20) "
                           "requests, for `seconds` (<= 900). Body: {count?, seconds?, node?}")
    def post(self, request, pk):
        data = services.arm_capture(self.principal, pk, _body(request), actor=_actor(request))
        return Response(data, status=status.HTTP_201_CREATED)


class RouteCapturesView(DiagnosticsView):
    @extend_schema(responses=OBJ, summary="Requests captured on this route (newest first) and armed sessions")
    def get(self, request, pk):
        return Response(services.route_captures(self.principal, pk))


class TestRequestView(DiagnosticsView):
    @extend_schema(request=OpenApiTypes.OBJECT, responses=OBJ,
                   summary="Send a synthetic request through a node to this route, captured. "
                           "Body: {path?, host?, method?, headers?: {name: value}, node?}")
    def post(self, request, pk):
        return Response(services.synthetic_request(self.principal, pk, _body(request),
                                                   actor=_actor(request)))


class CaptureView(DiagnosticsView):
    @extend_schema(responses=OBJ, summary="A capture session and what it captured")
    def get(self, request, sid):
        return Response(services.capture_session(self.principal, sid))

    @extend_schema(responses=OBJ, summary="Stop a capture session")
    def delete(self, request, sid):
        return Response(services.stop_capture(self.principal, sid))


class EventStreamRenderer(JSONRenderer):
    """Lets a browser's EventSource (``Accept: text/event-stream``) through content
    negotiation; the stream itself is a StreamingHttpResponse, so only error bodies
    are rendered here, as JSON."""
    media_type = "text/event-stream"
    format = "sse"


class TailView(DiagnosticsView):
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    @extend_schema(
        parameters=[OpenApiParameter(n, OpenApiTypes.STR, OpenApiParameter.QUERY, description=d)
                    for n, d in (("route", "route ids, comma-separated"),
                                 ("host", "hosts, comma-separated"),
                                 ("status", "codes or classes: 502,5xx"),
                                 ("proxy_status", "Proxy-Status types or log codes"),
                                 ("client", "client addresses or CIDRs"),
                                 ("node", "only this node (id or name)"),
                                 ("seconds", "how long to stream (default 300, max 3600)"),
                                 ("limit", "stop after this many lines"),
                                 ("output", "sse (default) or jsonl"))],
        responses={(200, "text/event-stream"): OpenApiTypes.STR},
        summary="Live tail of the nodes' access logs, filtered (Server-Sent Events or JSON lines)")
    def get(self, request):
        p = self.principal
        params = {k: request.query_params.get(k) for k in
                  ("route", "host", "status", "proxy_status", "client")}
        flt = services.tail_filter(p, params)
        node_id = None
        if request.query_params.get("node"):
            node_id = services.node_or_404(p, request.query_params["node"]).id
        try:
            seconds = float(request.query_params.get("seconds", 300))
            limit = int(request.query_params.get("limit", 0))
        except ValueError:
            raise DjangoValidationError({"seconds": ["seconds and limit must be numbers"]}) from None
        fmt = request.query_params.get("output", "sse")  # ("format" is DRF's own parameter)
        if fmt not in ("sse", "jsonl"):
            raise DjangoValidationError({"output": ["sse or jsonl"]})
        render = tail.sse if fmt == "sse" else tail.jsonl

        async def body():
            async for event, data in tail.stream(flt, node_id=node_id, seconds=seconds,
                                                 limit=max(0, limit)):
                yield render(event, data)

        response = StreamingHttpResponse(
            body(), content_type="text/event-stream" if fmt == "sse" else "application/x-ndjson")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response


def _body(request) -> dict:
    data = request.data
    if not isinstance(data, dict):
        raise DjangoValidationError({"non_field_errors": ["the body must be a JSON object"]})
    return data
