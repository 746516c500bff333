from django import forms
from django.contrib import admin

from controlplane.certs.services import trusted_bundle  # the operator's CA bundle

from . import errorpages, services
from .admin_mixins import ChangeNoteForm, ListField, ServiceAdminMixin, WriteOnlyTextarea
from .models import AccessList, Certificate, ErrorPage, Pool, Route, Target


class TargetInline(admin.TabularInline):
    model = Target
    extra = 1
    fields = ("host", "port", "weight", "state", "healthy", "health_reason")
    readonly_fields = ("healthy", "health_reason")


def _inline_targets(formsets):
    """The targets as submitted in the inline (None when the inline is absent)."""
    for formset in formsets:
        if formset.model is Target:
            return [
                {k: f.cleaned_data[k] for k in ("host", "port", "weight", "state")}
                for f in formset.forms
                if f.cleaned_data and not f.cleaned_data.get("DELETE") and f.cleaned_data.get("host")
            ]
    return None


@admin.register(Pool)
class PoolAdmin(ServiceAdminMixin, admin.ModelAdmin):
    list_display = ("name", "tenant", "algorithm", "target_count", "health_check_enabled", "updated")
    list_filter = ("tenant", "algorithm", "health_check_enabled")
    search_fields = ("name", "targets__host")
    inlines = [TargetInline]
    fieldsets = [
        (None, {"fields": ("name", "tenant", "algorithm", "hash_on", "hash_key", "sticky_cookie")}),
        ("Timeouts and retries", {"fields": ("connect_timeout", "read_timeout", "retries")}),
        ("Passive health", {"fields": ("passive_failures", "passive_ejection_seconds")}),
        ("Upstream TLS", {"fields": ("tls_enabled", "tls_verify", "tls_ca_pem", "tls_sni")}),
        ("Active health check", {"fields": (
            "health_check_enabled", "health_check_type", "health_check_path", "health_check_method",
            "health_check_expected_statuses", "health_check_host", "health_check_interval",
            "health_check_timeout", "healthy_threshold", "unhealthy_threshold")}),
        ("Change", {"fields": ("change_note",)}),
    ]

    @admin.display(description="targets")
    def target_count(self, obj):
        return obj.targets.count()

    def service_save(self, request, obj, form, formsets):
        services.save_pool(self.actor(request), obj, targets=_inline_targets(formsets), note=self.note(form))

    def service_delete(self, request, obj):
        services.delete_pool(self.actor(request), obj)


class RouteForm(ChangeNoteForm):
    hosts = ListField(help_text='One host per line: exact names or "*." wildcards.')
    methods = ListField(required=False, help_text="One per line, e.g. GET; empty matches every method.")

    class Meta:
        model = Route
        fields = "__all__"


@admin.register(Route)
class RouteAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = RouteForm
    list_display = ("name", "tenant", "host_list", "path", "path_type", "pool", "priority", "enabled")
    list_filter = ("enabled", "tenant", "path_type")
    search_fields = ("name", "hosts", "path")
    list_select_related = ("tenant", "pool")
    fieldsets = [
        (None, {"fields": ("name", "tenant", "enabled", "hosts", "path", "path_type", "methods", "headers",
                           "priority", "pool")}),
        ("Forwarding", {"fields": ("strip_prefix", "preserve_host", "request_headers", "response_headers",
                                   "websocket", "forwarded", "max_body_size")}),
        ("TLS", {"fields": ("certificate", "acme", "https_redirect", "hsts_max_age")}),
        ("Access and maintenance", {"fields": ("access_list", "maintenance")}),
        ("Forward auth", {"fields": ("forward_auth",)}),
        ("Change", {"fields": ("change_note",)}),
    ]

    @admin.display(description="hosts")
    def host_list(self, obj):
        return ", ".join(obj.hosts or [])

    def service_save(self, request, obj, form, formsets):
        services.save_route(self.actor(request), obj, note=self.note(form))

    def service_delete(self, request, obj):
        services.delete_route(self.actor(request), obj)


class CertificateForm(ChangeNoteForm):
    private_key_pem = forms.CharField(
        required=False, widget=WriteOnlyTextarea(attrs={"rows": 4}), strip=False,
        help_text="Write-only: never shown again. Leave empty on a change to keep the stored key.")

    class Meta:
        model = Certificate
        fields = ("name", "tenant", "certificate_pem")

    def clean(self):
        data = super().clean()
        if not self.instance.pk and not data.get("private_key_pem"):
            self.add_error("private_key_pem", "This field is required.")
        return data


@admin.register(Certificate)
class CertificateAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = CertificateForm
    list_display = ("name", "tenant", "not_after", "chain_status", "source")
    list_filter = ("tenant", "chain_status", "source")
    search_fields = ("name", "subject", "sans")
    readonly_fields = ("subject", "issuer", "sans", "not_before", "not_after", "fingerprint",
                       "chain_status", "warnings", "source", "created", "updated")
    fieldsets = [
        (None, {"fields": ("name", "tenant", "certificate_pem", "private_key_pem")}),
        ("Parsed", {"fields": readonly_fields}),
        ("Change", {"fields": ("change_note",)}),
    ]

    def service_save(self, request, obj, form, formsets):
        key = form.cleaned_data.get("private_key_pem") or None
        services.save_certificate(self.actor(request), obj, private_key_pem=key, note=self.note(form),
                                  ca_bundle_pem=trusted_bundle(""))

    def service_delete(self, request, obj):
        services.delete_certificate(self.actor(request), obj)


class AccessListForm(ChangeNoteForm):
    class Meta:
        model = AccessList
        fields = "__all__"


@admin.register(AccessList)
class AccessListAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = AccessListForm
    list_display = ("name", "tenant", "default")
    list_filter = ("tenant", "default")
    search_fields = ("name",)
    list_select_related = ("tenant",)
    fields = ("name", "tenant", "rules", "default", "change_note")

    def service_save(self, request, obj, form, formsets):
        services.save_access_list(self.actor(request), obj, note=self.note(form))

    def service_delete(self, request, obj):
        services.delete_access_list(self.actor(request), obj)


class ErrorPageForm(ChangeNoteForm):
    class Meta:
        model = ErrorPage
        fields = "__all__"


@admin.register(ErrorPage)
class ErrorPageAdmin(ServiceAdminMixin, admin.ModelAdmin):
    """The platform default error pages, saved through ``controlplane.proxy.errorpages``."""
    form = ErrorPageForm
    list_display = ("status", "updated")
    fields = ("status", "body", "change_note")

    def get_readonly_fields(self, request, obj=None):
        return ("status",) if obj is not None else ()

    def service_save(self, request, obj, form, formsets):
        errorpages.save_error_page(self.actor(request), obj.status, obj.body, note=self.note(form))

    def service_delete(self, request, obj):
        errorpages.delete_error_page(self.actor(request), obj)
