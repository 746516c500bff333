"""REST API viewsets: shape in, services called, shape out.

Every viewset reads through ``permissions.scope_queryset`` (another tenant's object
by id is a 404; lists hold only one's own tenants' objects), checks the role of a
write with ``permissions.require`` (403), and changes state only through the
services, with ``X-Change-Note`` as the note and ``Actor.from_request`` (user or
token prefix, source address) as the actor. Service ``ValidationError``s become
400s naming the field (``errors.exception_handler``) and change nothing.
"""
from __future__ import annotations

import json

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.response import Response

from controlplane.alerts import services as alert_services
from controlplane.alerts.models import Alert, AlertChannel
from controlplane.alerts.visibility import with_visible_deliveries
from controlplane.audit.models import AuditEntry
from controlplane.audit.services import Actor
from controlplane.certs import services as cert_services
from controlplane.proxy import services
from controlplane.proxy.models import Certificate, Pool, Route
from controlplane.publishing import nodes as node_services
from controlplane.publishing import publisher
from controlplane.publishing.models import ConfigVersion, Node
from controlplane.tenancy import services as tenancy_services
from controlplane.tenancy.models import ApiToken, Delegation, Membership, Tenant

from . import errors, serializers as s
from .authentication import BearerTokenAuthentication, DashboardSessionAuthentication
from .permissions import (EDIT, MANAGE, STAFF, VIEW, IsAuthenticatedMember, principal_for, require,
                          scope_queryset, tenant_ids_at)
from .pagination import StrictLimitOffsetPagination
from .schema import SwitchyardAutoSchema

CHANGE_NOTE_HEADER = "X-Change-Note"


def tenant_param(description="Only objects of this tenant (slug)."):
    return OpenApiParameter("tenant", OpenApiTypes.STR, OpenApiParameter.QUERY, description=description)


def plain(value):
    """Serializer output (OrderedDicts, nested) → plain JSON-able values for JSONFields."""
    return json.loads(json.dumps(value))


class ApiViewSet(viewsets.GenericViewSet):
    """Base of every viewset: authentication, scoping, roles, notes, actors, errors."""
    authentication_classes = [BearerTokenAuthentication, DashboardSessionAuthentication]
    permission_classes = [IsAuthenticatedMember]
    schema = SwitchyardAutoSchema()
    pagination_class = StrictLimitOffsetPagination
    parser_classes = [JSONParser]
    lookup_value_regex = r"[^/]+"   # anything up to "/", so a malformed id is a JSON 404
    tenant_field: str | None = "tenant"   # lookup of the owning tenant; None: platform objects
    read_level = VIEW
    write_level = EDIT
    create_level = None                   # defaults to write_level
    filters: dict[str, str] = {}          # query parameter → queryset lookup (strings)
    int_filters: dict[str, str] = {}      # query parameter → queryset lookup (integers)

    def get_exception_handler(self):
        return errors.exception_handler

    # ---------------------------------------------------------- reading

    def base_queryset(self):
        return self.queryset.all()

    def get_queryset(self):
        qs = scope_queryset(self.request, self.base_queryset(), self.tenant_field, self.read_level)
        if getattr(self, "action", None) == "list":
            qs = self.filter_params(qs)
        return qs

    def filter_params(self, qs):
        params = self.request.query_params
        for name, lookup in self.filters.items():
            if params.get(name):
                qs = qs.filter(**{lookup: params[name]})
        for name, lookup in self.int_filters.items():
            if name in params:  # present but empty is an error too, not "no filter"
                try:
                    value = int(params[name])
                    if abs(value) > s.MAX_ID:
                        raise ValueError
                except ValueError:
                    raise ValidationError({name: ["must be an integer"]}) from None
                qs = qs.filter(**{lookup: value})
        return qs

    # ---------------------------------------------------------- writing helpers

    @property
    def actor(self) -> Actor:
        return Actor.from_request(self.request)

    @property
    def note(self) -> str:
        return self.request.headers.get(CHANGE_NOTE_HEADER, "").strip()

    @property
    def principal(self):
        return principal_for(self.request)

    def owner_of(self, obj):
        return getattr(obj, "tenant", None) if getattr(obj, "tenant_id", None) else None

    def check_write(self, obj, level=None):
        require(self.request, self.owner_of(obj), level or self.write_level)

    def tenant_for_create(self, data, level=None):
        """The tenant named in ``data``; for a member of exactly one tenant (at the
        write level) it defaults to that one. Checked against the role (403)."""
        level = level or self.create_level or self.write_level
        if "tenant" in data:
            tenant = data["tenant"]
        elif self.principal.staff:
            tenant = None
        else:
            ids = tenant_ids_at(self.principal, level)
            if len(ids) != 1:
                raise ValidationError({"tenant": ["This field is required (the slug of one of your tenants)."]})
            tenant = Tenant.objects.get(pk=ids[0])
        require(self.request, tenant, level)
        return tenant

    def fixed_tenant(self, obj, data):
        """``tenant`` may be given on update only unchanged."""
        if "tenant" in data:
            if (data.pop("tenant") or None) != self.owner_of(obj):
                raise ValidationError({"tenant": ["cannot be changed; create the object in the other tenant"]})


IF_MATCH_HEADER = "If-Match"


def weak_match(header: str | None, etag: str) -> bool:
    """``If-None-Match`` semantics (weak comparison)."""
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


class Retrieve:
    """GET of one object with its ``ETag`` (``If-None-Match`` → 304)."""

    def retrieve(self, request, *args, **kwargs):
        obj = self.get_object()
        etag = services.etag_of(obj)
        if weak_match(request.headers.get("If-None-Match"), etag):
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
        return Response(self.get_serializer(obj).data, headers={"ETag": etag})


class ServiceViewSet(mixins.ListModelMixin, Retrieve, ApiViewSet):
    """Read, plus the writes the ``Create``/``Update``/``Destroy`` mixins add; those call
    ``create_object``/``update_object``/``delete_object``, which call the services."""

    def created_data(self, obj):
        return self.get_serializer(obj).data


class Create:
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        obj = self.create_object(dict(serializer.validated_data))
        return Response(self.created_data(obj), status=status.HTTP_201_CREATED,
                        headers={"ETag": services.etag_of(obj)})


class Update:
    """PUT and PATCH: the named fields are applied to the stored row under its lock, so
    concurrent writers of different fields never undo each other; a stale ``If-Match``
    is a 412 and changes nothing."""

    def update(self, request, *args, partial=False, **kwargs):
        obj = self.get_object()
        self.check_write(obj)
        serializer = self.get_serializer(obj, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        self.fixed_tenant(obj, data)
        with services.locked_current(obj, request.headers.get(IF_MATCH_HEADER)) as current:
            obj = self.update_object(current, data)
        stored = self.get_queryset().get(pk=obj.pk)
        return Response(self.get_serializer(stored).data, headers={"ETag": services.etag_of(stored)})

    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)


class Destroy:
    def destroy(self, request, *args, **kwargs):
        obj = self.get_object()
        self.check_write(obj)
        with services.locked_current(obj, request.headers.get(IF_MATCH_HEADER)) as current:
            self.delete_object(current)
        return Response(status=status.HTTP_204_NO_CONTENT)


# ------------------------------------------------------------------ tenants and delegations

@extend_schema_view(
    list=extend_schema(summary="Tenants you can see (staff: all)", parameters=[tenant_param("Only this slug.")]),
    create=extend_schema(summary="Create a tenant (platform staff)"),
    update=extend_schema(summary="Change a tenant (staff; an owner may change only its name)"),
    partial_update=extend_schema(summary="Change a tenant (staff; an owner may change only its name)"),
    destroy=extend_schema(summary="Delete a tenant that owns no routes, pools or certificates (staff)"),
)
class TenantViewSet(Create, Update, Destroy, ServiceViewSet):
    queryset = Tenant.objects.prefetch_related("delegations")
    serializer_class = s.TenantSerializer
    lookup_field = "slug"
    tenant_field = "id"
    write_level = MANAGE
    filters = {"tenant": "slug"}
    create_level = STAFF
    PLATFORM_FIELDS = ("max_routes", "max_pools", "max_targets", "max_certificates", "allowed_networks",
                       "rate_limit")

    def check_write(self, obj, level=None):
        require(self.request, obj, level or self.write_level)

    def create_object(self, data):
        require(self.request, None, STAFF)
        return services.create_tenant(self.actor, note=self.note, **data)

    def update_object(self, tenant, data):
        if data.get("slug", tenant.slug) != tenant.slug:
            raise ValidationError({"slug": ["cannot be changed"]})
        data.pop("slug", None)
        if not self.principal.staff:
            changed = [name for name in self.PLATFORM_FIELDS if name in data and data[name] != getattr(tenant, name)]
            if changed:
                raise PermissionDenied("only platform staff may change quotas, allowed_networks and rate_limit")
        return services.update_tenant(self.actor, tenant, note=self.note, **data)

    def destroy(self, request, *args, **kwargs):
        tenant = self.get_object()
        require(request, None, STAFF)
        services.delete_tenant(self.actor, tenant, note=self.note, if_match=request.headers.get(IF_MATCH_HEADER))
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(list=extend_schema(parameters=[tenant_param()]))
class DelegationViewSet(Create, Update, Destroy, ServiceViewSet):
    """Hostname suffixes handed to tenants; only platform staff change them."""
    queryset = Delegation.objects.select_related("tenant")
    serializer_class = s.DelegationSerializer
    write_level = STAFF
    filters = {"tenant": "tenant__slug"}

    def create_object(self, data):
        require(self.request, None, STAFF)
        delegation = services.create_delegation(self.actor, data["tenant"], data["suffix"], note=self.note)
        return self._on_demand(delegation, data)

    def update_object(self, delegation, data):
        if "suffix" in data:
            delegation = services.update_delegation(self.actor, delegation, data["suffix"], note=self.note)
        return self._on_demand(delegation, data)

    def _on_demand(self, delegation, data):
        fields = {k: data[k] for k in services.ON_DEMAND_FIELDS if k in data}
        if not fields:
            return delegation
        return services.update_delegation_on_demand(self.actor, delegation, note=self.note, **fields)

    def delete_object(self, delegation):
        services.delete_delegation(self.actor, delegation, note=self.note)


@extend_schema_view(list=extend_schema(parameters=[tenant_param()]))
class MembershipViewSet(Create, Update, Destroy, ServiceViewSet):
    """Members of a tenant and their roles; owners (and staff) manage them."""
    queryset = Membership.objects.select_related("tenant", "user").order_by("tenant__slug", "user__username")
    serializer_class = s.MembershipSerializer
    write_level = MANAGE
    filters = {"tenant": "tenant__slug"}

    def create_object(self, data):
        tenant = self.tenant_for_create(data)
        return tenancy_services.add_member(self.actor, tenant, data["user"]["username"],
                                           data.get("role", Membership.VIEWER), note=self.note)

    def update_object(self, member, data):
        if "user" in data and data["user"]["username"] != member.user.get_username():
            raise ValidationError({"user": ["cannot be changed; add a new member instead"]})
        return tenancy_services.change_member(self.actor, member, data.get("role", member.role), note=self.note)

    def delete_object(self, member):
        tenancy_services.remove_member(self.actor, member, note=self.note)


# ------------------------------------------------------------------ pools, routes, certificates

@extend_schema_view(list=extend_schema(parameters=[tenant_param()]))
class PoolViewSet(Create, Update, Destroy, ServiceViewSet):
    """Upstream pools with their `targets` (a nested list) and `health_check` (a nested object)."""
    queryset = Pool.objects.select_related("tenant").prefetch_related("targets")
    serializer_class = s.PoolSerializer
    filters = {"tenant": "tenant__slug"}

    def create_object(self, data):
        tenant = self.tenant_for_create(data)
        data.pop("tenant", None)
        targets = plain(data.pop("targets", []))
        return services.create_pool(self.actor, tenant=tenant, targets=targets, note=self.note, **data)

    def update_object(self, pool, data):
        targets = plain(data.pop("targets")) if "targets" in data else None
        return services.update_pool(self.actor, pool, targets=targets, note=self.note, **data)

    def delete_object(self, pool):
        services.delete_pool(self.actor, pool, note=self.note)


@extend_schema_view(list=extend_schema(parameters=[
    tenant_param(),
    OpenApiParameter("host", OpenApiTypes.STR, OpenApiParameter.QUERY,
                     description="Only routes whose `hosts` contain this name (exactly, case-insensitive)."),
    OpenApiParameter("pool", OpenApiTypes.INT, OpenApiParameter.QUERY, description="Only routes using this pool."),
]))
class RouteViewSet(Create, Update, Destroy, ServiceViewSet):
    queryset = Route.objects.select_related("tenant")
    serializer_class = s.RouteSerializer
    filters = {"tenant": "tenant__slug"}
    int_filters = {"pool": "pool_id"}

    def filter_params(self, qs):
        qs = super().filter_params(qs)
        host = self.request.query_params.get("host", "").strip().lower().rstrip(".")
        if host:
            ids = [pk for pk, hosts in qs.values_list("pk", "hosts")
                   if isinstance(hosts, list) and host in [str(h).lower() for h in hosts]]
            qs = qs.filter(pk__in=ids)
        return qs

    def create_object(self, data):
        tenant = self.tenant_for_create(data)
        data.pop("tenant", None)
        return services.create_route(self.actor, tenant=tenant, note=self.note, **plain_fields(data))

    def update_object(self, route, data):
        return services.update_route(self.actor, route, note=self.note, **plain_fields(data))

    def delete_object(self, route):
        services.delete_route(self.actor, route, note=self.note)


def plain_fields(data: dict) -> dict:
    return {k: plain(v) if isinstance(v, (list, dict)) else v for k, v in data.items()}


@extend_schema_view(list=extend_schema(parameters=[tenant_param()]))
class CertificateViewSet(Create, Update, Destroy, ServiceViewSet):
    """Uploaded certificates. `private_key_pem` is write-only and never returned; the
    parsed fields (subject, sans, issuer, validity, fingerprint, chain status,
    warnings) are read-only."""
    queryset = Certificate.objects.select_related("tenant")
    serializer_class = s.CertificateSerializer
    filters = {"tenant": "tenant__slug"}

    def create_object(self, data):
        tenant = self.tenant_for_create(data)
        return cert_services.upload_certificate(
            self.actor, tenant=tenant, name=data.get("name", ""), certificate_pem=data.get("certificate_pem", ""),
            private_key_pem=data.get("private_key_pem", ""), ca_bundle_pem=data.get("ca_bundle_pem", ""),
            note=self.note)

    def update_object(self, cert, data):
        key = data.get("private_key_pem")
        if "certificate_pem" in data:
            return cert_services.replace_certificate(
                self.actor, cert, certificate_pem=data["certificate_pem"], private_key_pem=key,
                name=data.get("name"), ca_bundle_pem=data.get("ca_bundle_pem", ""), note=self.note)
        fields = {"name": data["name"].strip()} if "name" in data else {}
        try:
            return services.update_certificate(
                self.actor, cert, private_key_pem=key, note=self.note,
                ca_bundle_pem=cert_services.trusted_bundle(data.get("ca_bundle_pem", "")), **fields)
        except DjangoValidationError:
            cert.refresh_from_db()
            raise

    def delete_object(self, cert):
        services.delete_certificate(self.actor, cert, note=self.note)


# ------------------------------------------------------------------ nodes and versions

@extend_schema_view(
    create=extend_schema(summary="Register a node (staff); the response holds its token, shown only once",
                         responses={201: s.NodeCreatedSerializer}),
)
class NodeViewSet(Create, ServiceViewSet):
    """Data-plane nodes (platform staff only)."""
    queryset = Node.objects.all()
    serializer_class = s.NodeSerializer
    tenant_field = None
    write_level = STAFF

    def create_object(self, data):
        node, token = node_services.register_node(self.actor, data.get("name", ""), note=self.note)
        node.token = token
        return node

    def created_data(self, obj):
        return s.NodeCreatedSerializer(obj, context=self.get_serializer_context()).data

    @extend_schema(request=None, responses={200: s.NodeSerializer},
                   summary="Revoke the node's token: it can no longer connect")
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        node = self.get_object()
        require(request, None, STAFF)
        node_services.revoke_node(self.actor, node, note=self.note)
        return Response(self.get_serializer(node).data)


@extend_schema_view(retrieve=extend_schema(responses=s.VersionDetailSerializer))
class VersionViewSet(mixins.ListModelMixin, Retrieve, ApiViewSet):
    """Config versions, by number (platform staff: a version holds every tenant's config)."""
    queryset = ConfigVersion.objects.all()
    serializer_class = s.VersionSerializer
    lookup_field = "number"
    tenant_field = None
    write_level = STAFF

    def get_serializer_class(self):
        return s.VersionDetailSerializer if self.action == "retrieve" else s.VersionSerializer

    def get_object(self):
        try:
            if int(self.kwargs["number"]) > 2 ** 31:
                raise ValueError
        except ValueError:
            from django.http import Http404
            raise Http404("no such version") from None
        return super().get_object()

    @extend_schema(request=None, responses={200: s.RollbackResultSerializer},
                   summary="Make this version live again (as a new version); the note comes from X-Change-Note")
    @action(detail=True, methods=["post"])
    def rollback(self, request, number=None):
        target = self.get_object()
        require(request, None, STAFF)
        version = publisher.rollback(self.actor, target.number, note=self.note)
        return Response({"rolled_back_to": target.number,
                         "version": s.VersionSerializer(version).data if version else None})

    @extend_schema(
        parameters=[OpenApiParameter("from", OpenApiTypes.INT, OpenApiParameter.QUERY, required=True),
                    OpenApiParameter("to", OpenApiTypes.INT, OpenApiParameter.QUERY, required=True)],
        responses={200: s.DiffSerializer}, summary="What changed from version `from` to version `to`")
    @action(detail=False, methods=["get"])
    def diff(self, request):
        versions, problems = {}, {}
        for name in ("from", "to"):
            raw = request.query_params.get(name, "")
            try:
                number = int(raw)
                if not 0 < number < 2 ** 31:
                    raise ValueError
            except ValueError:
                problems[name] = ["is required: a version number" if not raw else f"{raw!r} is not a version number"]
                continue
            versions[name] = self.get_queryset().filter(number=number).first()
            if versions[name] is None:
                problems[name] = [f"there is no version {number}"]
        if problems:
            raise ValidationError(problems)
        a, b = versions["from"], versions["to"]
        return Response({"from": a.number, "to": b.number, "changes": publisher.diff(a, b)})


# ------------------------------------------------------------------ audit and alerts

@extend_schema_view(list=extend_schema(parameters=[
    tenant_param(),
    OpenApiParameter("object_type", OpenApiTypes.STR, OpenApiParameter.QUERY, description="e.g. route, pool"),
    OpenApiParameter("action", OpenApiTypes.STR, OpenApiParameter.QUERY, description="e.g. create, rollback"),
]))
class AuditViewSet(mixins.ListModelMixin, Retrieve, ApiViewSet):
    """The audit log: a member sees the entries of their tenants."""
    queryset = AuditEntry.objects.select_related("tenant")
    serializer_class = s.AuditEntrySerializer
    filters = {"tenant": "tenant__slug", "object_type": "object_type", "action": "action"}


@extend_schema_view(list=extend_schema(parameters=[tenant_param()]))
class AlertChannelViewSet(Create, Update, Destroy, ServiceViewSet):
    """E-mail and webhook channels; the webhook `secret` is write-only."""
    queryset = AlertChannel.objects.select_related("tenant")
    serializer_class = s.AlertChannelSerializer
    filters = {"tenant": "tenant__slug"}

    def create_object(self, data):
        tenant = self.tenant_for_create(data)
        data.pop("tenant", None)
        secret = data.pop("secret", None)
        send_open = bool(data.pop("send_open_alerts", False))
        channel = AlertChannel(tenant=tenant, **plain_fields(data))
        return alert_services.save_channel(self.actor, channel, secret=secret, note=self.note,
                                           send_open_alerts=send_open)

    def update_object(self, channel, data):
        secret = data.pop("secret", None)
        data.pop("send_open_alerts", None)  # only a new channel gets the open alerts
        for name, value in plain_fields(data).items():
            setattr(channel, name, value)
        return alert_services.save_channel(self.actor, channel, secret=secret, note=self.note)

    def delete_object(self, channel):
        alert_services.delete_channel(self.actor, channel, note=self.note)

    @extend_schema(request=None, responses={200: s.ChannelTestResultSerializer},
                   summary="Send a test message through the channel now (its real delivery, once, no retry)")
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        channel = self.get_object()
        require(request, channel.tenant, EDIT)
        result = alert_services.send_test(self.actor, channel)
        return Response({"ok": result.ok, "message": result.message, "response_code": result.response_code})


@extend_schema_view(list=extend_schema(parameters=[
    tenant_param(), OpenApiParameter("kind", OpenApiTypes.STR, OpenApiParameter.QUERY,
                                     description="e.g. certificate_expiring")]))
class AlertViewSet(mixins.ListModelMixin, Retrieve, ApiViewSet):
    """Alerts raised, each with its delivery attempts (a member: only those to its
    tenants' channels)."""
    queryset = Alert.objects.select_related("tenant")
    serializer_class = s.AlertSerializer
    filters = {"tenant": "tenant__slug", "kind": "kind"}

    def base_queryset(self):
        return with_visible_deliveries(self.queryset.all(), self.principal)


# ------------------------------------------------------------------ API tokens

@extend_schema_view(
    create=extend_schema(summary="Issue a token; the response holds it, shown only once",
                         responses={201: s.ApiTokenCreatedSerializer}),
    destroy=extend_schema(summary="Revoke the token (the row stays for the audit log)"),
    list=extend_schema(parameters=[tenant_param()]),
)
class ApiTokenViewSet(Create, Destroy, ServiceViewSet):
    """API tokens: a tenant's owners manage its tokens; anyone sees and revokes their
    own per-user tokens (not through a per-tenant token)."""
    queryset = ApiToken.objects.select_related("tenant", "user").order_by("-id")
    serializer_class = s.ApiTokenSerializer
    write_level = MANAGE
    create_level = VIEW
    filters = {"tenant": "tenant__slug"}

    def tenant_token(self) -> bool:
        auth = getattr(self.request, "auth", None)
        return isinstance(auth, ApiToken) and auth.tenant_id is not None

    def get_queryset(self):
        qs = self.base_queryset()
        if not self.principal.staff:
            visible = Q(tenant_id__in=tenant_ids_at(self.principal, MANAGE))
            if not self.tenant_token():
                visible |= Q(tenant__isnull=True, user=self.request.user)
            qs = qs.filter(visible)
        return self.filter_params(qs) if self.action == "list" else qs

    def check_write(self, token, level=None):
        if token.tenant_id is None and token.user_id == self.request.user.pk and not self.tenant_token():
            return  # one's own per-user token
        require(self.request, token.tenant if token.tenant_id else None, MANAGE)

    def create_object(self, data):
        """Without ``tenant``: a per-tenant token issues for its own tenant, anyone
        else gets a per-user token; ``tenant: null`` asks for a per-user token."""
        if "tenant" not in data and self.tenant_token():
            data["tenant"] = self.request.auth.tenant
        tenant = data.get("tenant")
        if tenant is None:
            if self.tenant_token():
                raise PermissionDenied("a per-tenant token cannot issue a per-user token")
        else:
            require(self.request, tenant, MANAGE)
        row, plain_token = tenancy_services.issue_token(
            self.actor, self.request.user, tenant=tenant, role=data.get("role", ""), name=data.get("name", ""),
            note=self.note)
        row.token = plain_token
        return row

    def created_data(self, obj):
        return s.ApiTokenCreatedSerializer(obj, context=self.get_serializer_context()).data

    def delete_object(self, token):
        tenancy_services.revoke_token(self.actor, token, note=self.note)

    @extend_schema(request=None, responses={200: s.ApiTokenSerializer}, summary="Revoke the token")
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        token = self.get_object()
        self.check_write(token)
        tenancy_services.revoke_token(self.actor, token, note=self.note)
        return Response(self.get_serializer(token).data)
