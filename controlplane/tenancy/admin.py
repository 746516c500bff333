from django.contrib import admin

from controlplane.audit.services import record
from controlplane.proxy import services
from controlplane.proxy.admin_mixins import ServiceAdminMixin

from .models import ApiToken, Delegation, Membership, Tenant


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ("user",)


class DelegationInline(admin.TabularInline):
    model = Delegation
    extra = 1
    fields = ("suffix", "created")
    readonly_fields = ("created",)


@admin.register(Tenant)
class TenantAdmin(ServiceAdminMixin, admin.ModelAdmin):
    list_display = ("slug", "name", "delegation_list", "max_routes", "max_pools", "max_targets", "max_certificates")
    search_fields = ("slug", "name", "delegations__suffix")
    inlines = [DelegationInline, MembershipInline]
    fieldsets = [
        (None, {"fields": ("slug", "name")}),
        ("Quotas", {"fields": ("max_routes", "max_pools", "max_targets", "max_certificates")}),
        ("Upstream policy", {"fields": ("allowed_networks",),
                             "description": "Networks this tenant's targets may use although they are "
                                            'normally forbidden, e.g. ["10.20.0.0/16"].'}),
        ("Change", {"fields": ("change_note",)}),
    ]

    @admin.display(description="delegations")
    def delegation_list(self, obj):
        return ", ".join(obj.delegations.values_list("suffix", flat=True))

    def service_save(self, request, obj, form, formsets):
        actor, note = self.actor(request), self.note(form)
        services.save_tenant(actor, obj, note=note)
        for formset in formsets:
            if formset.model is Delegation:
                self._save_delegations(actor, obj, formset, note)
            else:
                self._save_memberships(actor, obj, formset, note)

    @staticmethod
    def _save_delegations(actor, tenant, formset, note):
        for form in formset.deleted_forms:
            if form.instance.pk:
                services.delete_delegation(actor, form.instance, note=note)
        for form in formset.forms:
            if form in formset.deleted_forms or not form.has_changed() or not form.cleaned_data.get("suffix"):
                continue
            form.instance.tenant = tenant
            services.save_delegation(actor, form.instance, note=note)

    @staticmethod
    def _save_memberships(actor, tenant, formset, note):
        formset.save()
        for member in formset.new_objects + [obj for obj, _ in formset.changed_objects]:
            record(actor, "member", member, after={"user": member.user_id, "role": member.role},
                   note=note, tenant=tenant)
        for member in formset.deleted_objects:
            record(actor, "unmember", member, before={"user": member.user_id, "role": member.role},
                   note=note, tenant=tenant)

    def service_delete(self, request, obj):
        services.delete_tenant(self.actor(request), obj)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are issued with `manage.py createapitoken` (shown once); here they are revoked."""
    list_display = ("prefix", "name", "user", "tenant", "role", "created", "last_used", "revoked")
    list_filter = ("tenant", "role")
    fields = ("prefix", "name", "user", "tenant", "role", "created", "last_used", "revoked")
    readonly_fields = ("prefix", "name", "user", "tenant", "role", "created", "last_used")

    def has_add_permission(self, request):
        return False

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        record(services.Actor.from_request(request), "revoke" if obj.revoked else "update", obj,
               after={"revoked": obj.revoked.isoformat() if obj.revoked else None})
