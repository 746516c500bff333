"""/api/v1/access-lists/: who may reach a route (ordered allow/deny rules on CIDRs).

The serializer is the JSON shape only; writes go to ``controlplane.proxy.services``
(validation, versions, audit), as for every other resource.
"""
from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers

from controlplane.proxy import services
from controlplane.proxy.models import AccessList
from dataplane import schema

from .serializers import (BasicAuthUserSerializer, QuarantineField, ServiceModelSerializer, StrictCharField,
                          tenant_field)
from .views import Create, Destroy, ServiceViewSet, Update, plain, tenant_param


class AccessRuleSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=list(schema.ACCESS_ACTIONS),
                                     help_text="allow or deny the addresses of cidr.")
    cidr = StrictCharField(max_length=64, help_text="An IPv4 or IPv6 address or network, e.g. 10.0.0.0/8 or "
                                                    "2001:db8::/32 (stored in canonical form).")


class AccessListSerializer(ServiceModelSerializer):
    tenant = tenant_field()
    rules = AccessRuleSerializer(many=True, required=False, help_text=(
        "Ordered rules on the client address (as trusted_proxies determines it): the first rule that "
        "matches decides; an address no rule matches gets `default`."))
    default = serializers.ChoiceField(choices=list(schema.ACCESS_ACTIONS), required=False,
                                      help_text="allow or deny what no rule matches (default allow).")
    users = BasicAuthUserSerializer(many=True, required=False, help_text=(
        "Basic-auth users: a route using this list asks for a valid username and password (401 with "
        "WWW-Authenticate until given). The list given replaces the stored one: a user left out is removed. "
        "At most 100 users, 20 new passwords per write."))
    satisfy = serializers.ChoiceField(choices=list(schema.SATISFY), required=False, help_text=(
        "With users: all (default) = the client must pass the rules and give a valid password; any = "
        "either is enough (addresses the rules allow get in without a password)."))
    routes = serializers.SerializerMethodField(help_text="Ids of the routes that use this access list.")
    quarantine = QuarantineField()

    class Meta:
        model = AccessList
        fields = ["id", "tenant", "name", "rules", "default", "users", "satisfy", "routes", "quarantine",
                  "created", "updated"]
        read_only_fields = ["id", "created", "updated"]

    def get_routes(self, obj) -> list[int]:
        return sorted(obj.routes.values_list("id", flat=True))


@extend_schema_view(
    list=extend_schema(summary="Access lists you can see", parameters=[tenant_param()]),
    create=extend_schema(summary="Create an access list"),
    destroy=extend_schema(summary="Delete an access list no route uses"),
)
class AccessListViewSet(Create, Update, Destroy, ServiceViewSet):
    """Access lists: owned by the platform or a tenant and usable by that owner's routes
    (route field `access_list`). A refused request gets 403 with
    `Proxy-Status: switchyard; error=http_request_denied; details="access list <name>"`.
    With `users`, a client must also give a valid password (basic auth; `satisfy` any: either is
    enough): 401 with `WWW-Authenticate: Basic realm="<name>", charset="UTF-8"` and
    `details="basic auth <name>"`; repeated failures from one address get 429 with Retry-After."""
    queryset = AccessList.objects.select_related("tenant")
    serializer_class = AccessListSerializer
    filters = {"tenant": "tenant__slug"}

    def create_object(self, data):
        tenant = self.tenant_for_create(data)
        data.pop("tenant", None)
        return services.create_access_list(self.actor, tenant=tenant, note=self.note, **plain(data))

    def update_object(self, acl, data):
        return services.update_access_list(self.actor, acl, note=self.note, **plain(data))

    def delete_object(self, acl):
        services.delete_access_list(self.actor, acl, note=self.note)
