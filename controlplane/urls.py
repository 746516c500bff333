from allauth.socialaccount.providers.openid_connect import views as oidc_views
from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from controlplane.dashboard.forms import AdminLoginForm
from controlplane.dashboard.throttle import with_throttle_status

# The admin's sign-in goes through the same login throttle as the dashboard's (its
# backend refuses inside authenticate()); this form and status only say so.
admin.site.login_form = AdminLoginForm

handler400 = "controlplane.error_pages.bad_request"
handler403 = "controlplane.error_pages.permission_denied"
handler404 = "controlplane.error_pages.page_not_found"
handler500 = "controlplane.error_pages.server_error"

urlpatterns = [
    path("favicon.ico", RedirectView.as_view(url=static("favicon.ico"), permanent=True)),
    path("admin/login/", with_throttle_status(admin.site.login)),
    path("admin/", admin.site.urls),
    path("api/v1/", include("controlplane.api.urls")),  # REST API, schema and docs
    # single sign-on: allauth's OpenID Connect callback only (the rest of the flow is the dashboard's)
    path("accounts/oidc/<str:provider_id>/login/callback/", oidc_views.callback, name="openid_connect_callback"),
    path("", include("controlplane.dashboard.urls")),  # dashboard: keep last (mounted at /)
]
