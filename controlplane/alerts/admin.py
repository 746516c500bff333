from django import forms
from django.contrib import admin

from controlplane.proxy.admin_mixins import ReadOnlyAdmin

from .models import Alert, AlertChannel, Delivery


class AlertChannelForm(forms.ModelForm):
    url = forms.URLField(required=False, assume_scheme="https")
    secret = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False),
        help_text="Webhook signing secret. Write-only: leave empty to keep the stored one.")

    class Meta:
        model = AlertChannel
        fields = ("name", "tenant", "kind", "emails", "url", "enabled")


@admin.register(AlertChannel)
class AlertChannelAdmin(admin.ModelAdmin):
    form = AlertChannelForm
    list_display = ("name", "tenant", "kind", "enabled")
    list_filter = ("kind", "enabled", "tenant")

    def save_model(self, request, obj, form, change):
        if form.cleaned_data.get("secret"):
            obj.secret = form.cleaned_data["secret"]  # encrypted by the model
        super().save_model(request, obj, form, change)


class DeliveryInline(admin.TabularInline):
    model = Delivery
    extra = 0
    can_delete = False
    readonly_fields = ("channel", "attempt", "status", "response_code", "error", "created")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ("created", "kind", "tenant", "subject")
    list_filter = ("kind", "tenant")
    search_fields = ("subject", "dedup_key")
    inlines = [DeliveryInline]


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ("created", "alert", "channel", "attempt", "status", "response_code")
    list_filter = ("status", "channel")
