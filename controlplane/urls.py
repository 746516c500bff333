from django.contrib import admin
from django.urls import include, path

from controlplane.dashboard.forms import AdminLoginForm
from controlplane.dashboard.throttle import with_throttle_status

# The admin's sign-in goes through the same login throttle as the dashboard's (its
# backend refuses inside authenticate()); this form and status only say so.
admin.site.login_form = AdminLoginForm

urlpatterns = [
    path("admin/login/", with_throttle_status(admin.site.login)),
    path("admin/", admin.site.urls),
    path("api/v1/", include("controlplane.api.urls")),  # REST API, schema and docs
    path("", include("controlplane.dashboard.urls")),  # dashboard: keep last (mounted at /)
]
