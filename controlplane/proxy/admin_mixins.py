"""Make Django admin saves go through the service layer (validate → save → publish → audit).

``ServiceAdminMixin`` defers the save to ``service_save`` (with the inlines, so a pool
and its targets are validated together). When the service refuses, the whole
admin transaction rolls back and the form is rendered again with the service's
messages as form errors: nothing is stored, and the user sees why.
"""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import HttpResponseRedirect

from controlplane.audit.services import Actor


class ServiceRefused(Exception):
    def __init__(self, error: ValidationError):
        super().__init__(str(error))
        self.error = error


def error_dict(error: ValidationError) -> dict[str, list[str]]:
    return error.message_dict if hasattr(error, "error_dict") else {NON_FIELD_ERRORS: error.messages}


class ChangeNoteForm(forms.ModelForm):
    change_note = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why this change? Stored with the config version and the audit entry.")


class ListField(forms.CharField):
    """A JSON list of strings edited as one value per line (commas also separate)."""
    widget = forms.Textarea(attrs={"rows": 3})

    def prepare_value(self, value):
        if isinstance(value, (list, tuple)):
            return "\n".join(str(v) for v in value)
        return value

    def to_python(self, value):
        if isinstance(value, (list, tuple)):
            return list(value)
        text = super().to_python(value) or ""
        return [item.strip() for line in text.splitlines() for item in line.split(",") if item.strip()]


class WriteOnlyTextarea(forms.Textarea):
    """Never renders a value back: secrets are shown to nobody, not even on an error."""

    def format_value(self, value):
        return ""


def _with_errors(form_class, errors: dict[str, list[str]]):
    class RefusedForm(form_class):
        def clean(self):
            data = super().clean()
            for field, messages_ in errors.items():
                for message in messages_:
                    if field in self.fields:
                        self.add_error(field, message)
                    elif field == NON_FIELD_ERRORS:
                        self.add_error(None, message)
                    else:
                        self.add_error(None, f"{field.replace('_', ' ').capitalize()}: {message}")
            return data

    RefusedForm.__name__ = form_class.__name__
    return RefusedForm


class ServiceAdminMixin:
    """Subclasses implement ``service_save(request, obj, form, formsets)`` and
    ``service_delete(request, obj)`` by calling ``controlplane.proxy.services``."""
    form = ChangeNoteForm

    def actor(self, request) -> Actor:
        return Actor.from_request(request)

    @staticmethod
    def note(form) -> str:
        return (getattr(form, "cleaned_data", None) or {}).get("change_note", "")

    def service_save(self, request, obj, form, formsets):  # pragma: no cover - abstract
        raise NotImplementedError

    def service_delete(self, request, obj):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- saving: defer the model save to save_related, where the inlines are known
    def save_model(self, request, obj, form, change):
        pass

    def save_related(self, request, form, formsets, change):
        try:
            self.service_save(request, form.instance, form, formsets)
        except ValidationError as exc:
            raise ServiceRefused(exc) from exc
        for formset in formsets:  # the admin's change message reads these
            for attr in ("new_objects", "changed_objects", "deleted_objects"):
                if not hasattr(formset, attr):
                    setattr(formset, attr, [])

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ServiceRefused as refused:
            # The admin's transaction rolled back; render the same POST with the errors.
            request._service_errors = error_dict(refused.error)
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change, **kwargs)
        errors = getattr(request, "_service_errors", None)
        return _with_errors(form_class, errors) if errors else form_class

    # -- deleting
    def delete_model(self, request, obj):
        try:
            self.service_delete(request, obj)
        except ValidationError as exc:
            raise ServiceRefused(exc) from exc

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except ServiceRefused as refused:
            for message in refused.error.messages:
                self.message_user(request, message, messages.ERROR)
            return HttpResponseRedirect(request.path)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            try:
                self.service_delete(request, obj)
            except ValidationError as exc:
                self.message_user(request, f"{obj} was not deleted: {'; '.join(exc.messages)}", messages.ERROR)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the system: viewable, never edited by hand."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
