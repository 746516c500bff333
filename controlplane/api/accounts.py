"""``/api/v1/users/`` (platform staff) and ``/api/v1/invitations/`` (tenant owners):
the same services as the dashboard's users page and tenant page
(``controlplane.accounts.services``)."""
from __future__ import annotations

import hashlib
import json

from django.contrib.auth import get_user_model
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view, inline_serializer
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from controlplane.accounts import services as accounts
from controlplane.accounts.models import Invitation
from controlplane.accounts import twofactor
from controlplane.tenancy.models import Membership

from .permissions import MANAGE, STAFF, require
from .serializers import StrictCharField, tenant_field
from .views import ServiceViewSet, tenant_param, weak_match

User = get_user_model()


# ------------------------------------------------------------------ serializers

class UserMembershipSerializer(serializers.Serializer):
    tenant = serializers.CharField(source="tenant.slug", read_only=True)
    role = serializers.CharField(read_only=True)


class UserSerializer(serializers.ModelSerializer):
    username = StrictCharField(max_length=150, help_text="Cannot be changed after creation.")
    email = serializers.EmailField(required=False, allow_blank=True,
                                   help_text="Where password reset links go.")
    password = StrictCharField(write_only=True, required=False, allow_blank=True,
                               help_text="Write-only, on create only. Leave out and send a reset link instead.")
    is_active = serializers.BooleanField(required=False,
                                         help_text="false: the user cannot sign in and their API tokens are refused.")
    is_staff = serializers.BooleanField(required=False, help_text="Platform staff: sees and manages everything.")
    memberships = UserMembershipSerializer(many=True, read_only=True)
    sso_linked = serializers.SerializerMethodField(
        help_text="Whether an identity of the single sign-on provider signs in as this user.")

    class Meta:
        model = User
        fields = ["id", "username", "email", "password", "is_active", "is_staff", "date_joined", "last_login",
                  "memberships", "sso_linked"]
        read_only_fields = ["id", "date_joined", "last_login", "memberships", "sso_linked"]

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_sso_linked(self, obj) -> bool:
        return any(True for _ in obj.socialaccount_set.all())  # prefetched by accounts.users()


class InvitationSerializer(serializers.ModelSerializer):
    tenant = tenant_field(help_text="Tenant slug; defaults to your one tenant if you own exactly one.")
    email = serializers.EmailField(max_length=254)
    role = serializers.ChoiceField(choices=Membership.ROLES, required=False, help_text="Default viewer.")
    status = serializers.CharField(read_only=True, help_text="pending, accepted, revoked or expired.")
    invited_by = serializers.CharField(source="invited_by.username", read_only=True, allow_null=True, default=None)

    class Meta:
        model = Invitation
        fields = ["id", "tenant", "email", "role", "status", "invited_by", "created", "expires", "accepted",
                  "revoked"]
        read_only_fields = ["id", "status", "invited_by", "created", "expires", "accepted", "revoked"]


class InvitationCreatedSerializer(InvitationSerializer):
    link = serializers.CharField(read_only=True, help_text="The one-time link: shown only in this response.")
    email_sent = serializers.BooleanField(read_only=True)
    email_error = serializers.CharField(read_only=True, help_text="Why the e-mail was not sent ('' when it was).")

    class Meta(InvitationSerializer.Meta):
        fields = InvitationSerializer.Meta.fields + ["link", "email_sent", "email_error"]


def user_etag(user) -> str:
    state = {"username": user.get_username(), "email": user.email, "is_active": user.is_active,
             "is_staff": user.is_staff}
    return '"' + hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:32] + '"'


# ------------------------------------------------------------------ viewsets

@extend_schema_view(
    list=extend_schema(summary="Users with their memberships (platform staff)"),
    create=extend_schema(summary="Create a user (platform staff)"),
    partial_update=extend_schema(summary="Change e-mail, is_active (deactivate) or is_staff"),
    update=extend_schema(summary="Change e-mail, is_active (deactivate) or is_staff"),
    destroy=extend_schema(summary="Delete a user with their memberships and tokens"),
)
class UserViewSet(mixins.CreateModelMixin, mixins.UpdateModelMixin, mixins.DestroyModelMixin, ServiceViewSet):
    serializer_class = UserSerializer
    tenant_field = None   # platform objects: only staff see them
    write_level = STAFF

    def base_queryset(self):
        return accounts.users()

    def retrieve(self, request, *args, **kwargs):
        user = self.get_object()
        etag = user_etag(user)
        if weak_match(request.headers.get("If-None-Match"), etag):
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
        return Response(self.get_serializer(user).data, headers={"ETag": etag})

    def create(self, request, *args, **kwargs):
        require(request, None, STAFF)
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user = accounts.create_user(self.actor, data["username"], email=data.get("email", ""),
                                    password=data.get("password", ""), is_staff=data.get("is_staff", False),
                                    note=self.note)
        if data.get("is_active") is False:
            accounts.set_active(self.actor, user, False, note=self.note)
        user = self.get_queryset().get(pk=user.pk)
        return Response(self.get_serializer(user).data, status=status.HTTP_201_CREATED,
                        headers={"ETag": user_etag(user)})

    def update(self, request, *args, partial=False, **kwargs):
        user = self.get_object()
        require(request, None, STAFF)
        if request.headers.get("If-Match") and not weak_match(request.headers["If-Match"], user_etag(user)):
            return Response({"detail": "the user changed since you read it"},
                            status=status.HTTP_412_PRECONDITION_FAILED, headers={"ETag": user_etag(user)})
        serializer = self.get_serializer(user, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if data.get("username", user.get_username()) != user.get_username():
            raise ValidationError({"username": ["cannot be changed"]})
        if data.get("password"):
            raise ValidationError({"password": ["cannot be set here; send a password reset link"]})
        accounts.update_user(self.actor, user, email=data.get("email"), is_active=data.get("is_active"),
                             is_staff=data.get("is_staff"), note=self.note)
        user = self.get_queryset().get(pk=user.pk)
        return Response(self.get_serializer(user).data, headers={"ETag": user_etag(user)})

    def destroy(self, request, *args, **kwargs):
        user = self.get_object()
        require(request, None, STAFF)
        accounts.delete_user(self.actor, user, note=self.note)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, summary="E-mail the user a link to set a new password",
                   responses={200: inline_serializer("PasswordResetSent", {
                       "email": serializers.EmailField(), "sent": serializers.BooleanField(),
                       "error": serializers.CharField()})})
    @action(detail=True, methods=["post"], url_path="reset-password")
    def reset_password(self, request, pk=None):
        user = self.get_object()
        require(request, None, STAFF)
        error = accounts.send_password_reset(self.actor, user, request.build_absolute_uri("/"), note=self.note)
        return Response({"email": user.email, "sent": not error, "error": error})

    @extend_schema(request=None, summary="Take every two-factor app, security key and recovery code off the user",
                   description="For a user who lost them all: they sign in with the password and enrol again. "
                               "Not on yourself (400), nor on a user without two-factor (400).",
                   responses={200: inline_serializer("TwoFactorReset", {
                       "two_factor": serializers.CharField(help_text="What the user has now: off.")})})
    @action(detail=True, methods=["post"], url_path="reset-two-factor")
    def reset_two_factor(self, request, pk=None):
        user = self.get_object()
        require(request, None, STAFF)
        twofactor.reset(self.actor, user)
        return Response({"two_factor": twofactor.summary(user)})


@extend_schema_view(
    list=extend_schema(summary="Invitations of the tenants you own", parameters=[tenant_param()]),
    create=extend_schema(summary="Invite an e-mail address into a tenant with a role",
                         responses={201: InvitationCreatedSerializer}),
    destroy=extend_schema(summary="Revoke a pending invitation (the row stays, status revoked)"),
)
class InvitationViewSet(mixins.CreateModelMixin, mixins.DestroyModelMixin, ServiceViewSet):
    """Tenant owners (and staff) invite people by e-mail. The answer never says whether
    an account with the address exists."""
    queryset = Invitation.objects.select_related("tenant", "invited_by").order_by("-id")
    serializer_class = InvitationSerializer
    read_level = MANAGE
    write_level = MANAGE
    filters = {"tenant": "tenant__slug"}

    def retrieve(self, request, *args, **kwargs):
        return Response(self.get_serializer(self.get_object()).data)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        tenant = self.tenant_for_create(data)
        if tenant is None:
            raise ValidationError({"tenant": ["is required"]})
        inv, link, error = accounts.invite(self.actor, tenant, data["email"], data.get("role", Membership.VIEWER),
                                           request.build_absolute_uri("/"), note=self.note)
        inv.link, inv.email_sent, inv.email_error = link, not error, error
        out = InvitationCreatedSerializer(inv, context=self.get_serializer_context()).data
        return Response(out, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        inv = self.get_object()
        self.check_write(inv)
        accounts.revoke_invitation(self.actor, inv, note=self.note)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={200: InvitationSerializer}, summary="Revoke the invitation")
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        inv = self.get_object()
        self.check_write(inv)
        inv = accounts.revoke_invitation(self.actor, inv, note=self.note)
        return Response(self.get_serializer(inv).data)
