"""/api/v1/: the resources, the OpenAPI schema (/api/v1/schema/) and its docs
(/api/v1/docs/ Swagger UI, /api/v1/docs/redoc/), served without any CDN."""
from django.http import JsonResponse
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from . import access_lists, accounts, config, error_pages, views

router = DefaultRouter()
router.register("tenants", views.TenantViewSet, basename="tenant")
router.register("delegations", views.DelegationViewSet, basename="delegation")
router.register("members", views.MembershipViewSet, basename="member")
router.register("pools", views.PoolViewSet, basename="pool")
router.register("routes", views.RouteViewSet, basename="route")
router.register("certificates", views.CertificateViewSet, basename="certificate")
router.register("access-lists", access_lists.AccessListViewSet, basename="accesslist")
router.register("error-pages", error_pages.ErrorPageViewSet, basename="errorpage")
router.register("nodes", views.NodeViewSet, basename="node")
router.register("versions", views.VersionViewSet, basename="version")
router.register("audit", views.AuditViewSet, basename="audit")
router.register("alert-channels", views.AlertChannelViewSet, basename="alertchannel")
router.register("alerts", views.AlertViewSet, basename="alert")
router.register("api-tokens", views.ApiTokenViewSet, basename="apitoken")
router.register("users", accounts.UserViewSet, basename="user")
router.register("invitations", accounts.InvitationViewSet, basename="invitation")

app_name = "api"
urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("docs/redoc/", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
    path("diagnostics/", include("controlplane.diagnostics.urls")),  # troubleshooting steps
    path("config/export", config.ConfigExportView.as_view(), name="config-export"),
    path("config/apply", config.ConfigApplyView.as_view(), name="config-apply"),
    path("", include(router.urls)),
    re_path(r"", lambda request, *args, **kwargs: JsonResponse({"detail": "Not found."}, status=404)),
]
