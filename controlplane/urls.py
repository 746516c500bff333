from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("controlplane.api.urls")),  # REST API, schema and docs
    path("", include("controlplane.dashboard.urls")),  # dashboard: keep last (mounted at /)
]
