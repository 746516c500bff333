"""Dashboard forms: they only parse what a person typed into the shapes the services
take. Business rules live in ``controlplane.proxy.validation`` (through the
services); ``errors.add_validation_errors`` puts its messages, unchanged, on the
fields they name, so the dashboard shows exactly what the API returns.
"""
from __future__ import annotations

import re

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from controlplane.alerts.models import AlertChannel
from controlplane.proxy.models import Certificate, Pool, Route, Target
from controlplane.proxy.services import etag_of
from controlplane.tenancy.models import Membership, Tenant

from . import throttle

NOTE_HELP = "Why this change? Stored with the version and in the audit log."


def model_field(model, name, **kwargs):
    """The model field's own form field (choices, types, help text), never required:
    a missing value is reported by the service, in the service's words."""
    field = model._meta.get_field(name).formfield(**kwargs)
    field.required = False
    return field


# ------------------------------------------------------------------ text <-> structures

def split_items(text) -> list[str]:
    """Lines or commas → non-empty stripped items."""
    return [item.strip() for item in re.split(r"[\n,]", text or "") if item.strip()]


class ListField(forms.CharField):
    """A list of strings, one per line (or comma-separated)."""
    widget = forms.Textarea(attrs={"rows": 3})

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, (list, tuple)) else value

    def to_python(self, value):
        return split_items(super().to_python(value))


class HeaderMatchField(forms.CharField):
    """``Name: value`` per line → [{"name", "value"}]."""
    widget = forms.Textarea(attrs={"rows": 2, "placeholder": "X-Canary: 1"})

    def prepare_value(self, value):
        if isinstance(value, list):
            return "\n".join(f"{h.get('name', '')}: {h.get('value', '')}" for h in value if isinstance(h, dict))
        return value

    def to_python(self, value):
        out = []
        for line in (super().to_python(value) or "").splitlines():
            if not line.strip():
                continue
            name, sep, val = line.partition(":")
            if not sep:
                raise ValidationError(f"{line.strip()}: write Name: value")
            out.append({"name": name.strip(), "value": val.strip()})
        return out


class HeaderRulesField(forms.CharField):
    """``set Name: value`` / ``add Name: value`` / ``remove Name`` per line →
    {"set": [...], "add": [...], "remove": [...]}."""
    widget = forms.Textarea(attrs={"rows": 3, "placeholder": "set X-Env: prod\nadd X-Via-Switchyard: 1\nremove Server"})

    def prepare_value(self, value):
        if isinstance(value, dict):
            lines = [f"{op} {h.get('name', '')}: {h.get('value', '')}"
                     for op in ("set", "add") for h in value.get(op) or [] if isinstance(h, dict)]
            lines += [f"remove {name}" for name in value.get("remove") or []]
            return "\n".join(lines)
        return value

    def to_python(self, value):
        rules = {"set": [], "add": [], "remove": []}
        for line in (super().to_python(value) or "").splitlines():
            line = line.strip()
            if not line:
                continue
            op, _, rest = line.partition(" ")
            op = op.lower()
            if op == "remove" and rest.strip():
                rules["remove"].append(rest.strip())
            elif op in ("set", "add") and ":" in rest:
                name, _, val = rest.partition(":")
                rules[op].append({"name": name.strip(), "value": val.strip()})
            else:
                raise ValidationError(f"{line}: write 'set Name: value', 'add Name: value' or 'remove Name'")
        return rules


TARGET_RE = re.compile(r"^(\[[^\]]+\]|[^\s:]+):(\d+)$")


class TargetsField(forms.CharField):
    """``host:port [weight=N] [enabled|disabled|draining]`` per line → target dicts."""
    widget = forms.Textarea(attrs={
        "rows": 4, "placeholder": "10.0.0.5:8080\nbackend.example.com:443 weight=3\n10.0.0.6:8080 draining"})

    def prepare_value(self, value):
        if isinstance(value, list):
            lines = []
            for t in value:
                host = t["host"] if ":" not in t["host"] else f"[{t['host']}]"
                line = f"{host}:{t['port']}"
                if t.get("weight", 1) != 1:
                    line += f" weight={t['weight']}"
                if t.get("state", Target.ENABLED) != Target.ENABLED:
                    line += f" {t['state']}"
                lines.append(line)
            return "\n".join(lines)
        return value

    def to_python(self, value):
        targets, problems = [], []
        for line in (super().to_python(value) or "").splitlines():
            words = line.split()
            if not words:
                continue
            m = TARGET_RE.match(words[0])
            if not m:
                problems.append(f"{words[0]}: write host:port (IPv6 as [addr]:port)")
                continue
            target = {"host": m.group(1).strip("[]"), "port": int(m.group(2)), "weight": 1,
                      "state": Target.ENABLED}
            for word in words[1:]:
                if word.startswith("weight="):
                    try:
                        target["weight"] = int(word[7:])
                    except ValueError:
                        problems.append(f"{line.strip()}: weight must be a whole number")
                elif word in (Target.ENABLED, Target.DISABLED, Target.DRAINING):
                    target["state"] = word
                else:
                    problems.append(f"{line.strip()}: unknown option {word} (weight=N, enabled, disabled, draining)")
            targets.append(target)
        if problems:
            raise ValidationError(problems)
        return targets


class JSONListField(forms.CharField):
    widget = forms.Textarea(attrs={"rows": 2})

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        return split_items(super().to_python(value))


# ------------------------------------------------------------------ base

class ServiceForm(forms.Form):
    """A form whose values go to a service (its refusals come back through
    ``errors.add_validation_errors``). ``etag`` carries the version of the object as
    the form showed it, so that saving cannot silently undo someone else's change."""
    note = forms.CharField(required=False, max_length=2000, help_text=NOTE_HELP,
                           widget=forms.Textarea(attrs={"rows": 2, "placeholder": "Change note (optional)"}))
    etag = forms.CharField(required=False, widget=forms.HiddenInput)

    field_aliases: dict[str, str] = {}

    def expect_version(self, instance) -> None:
        if instance is not None and instance.pk:
            self.fields["etag"].initial = etag_of(instance)

    @property
    def if_match(self) -> str | None:
        """The version the user edited (None: unconditional, as for an API call without If-Match)."""
        return self.cleaned_data.get("etag") or None

    def edited_fields(self) -> dict:
        """The model fields this form sets, by name (to say which ones a concurrent
        change touched)."""
        return self.service_fields()

    def rebase(self, etag: str) -> None:
        """Take ``etag`` as the version edited: saving again overwrites that version."""
        self.data = self.data.copy()
        self.data["etag"] = etag


class DeleteForm(ServiceForm):
    """Confirms deleting the version of the object the page showed."""

    def __init__(self, *args, instance, **kwargs):
        super().__init__(*args, **kwargs)
        self.expect_version(instance)

    def edited_fields(self) -> dict:
        return {}


def tenant_choices(principal, include_platform: bool):
    choices = [("", "— platform —")] if include_platform else []
    return choices + [(str(t.pk), t.slug) for t in principal.editable_tenants()]


class TenantChoiceMixin:
    def setup_tenant(self, principal, instance=None):
        self.principal = principal
        field = self.fields["tenant"]
        field.choices = tenant_choices(principal, principal.staff)
        field.required = not principal.staff
        if instance is not None and instance.pk:
            field.initial = str(instance.tenant_id or "")
            if not principal.staff:
                field.disabled = True
        elif not principal.staff and len(field.choices) == 1:
            field.initial = field.choices[0][0]

    def clean_tenant(self):
        value = self.cleaned_data.get("tenant")
        if self.fields["tenant"].disabled:
            value = self.fields["tenant"].initial
        return Tenant.objects.filter(pk=value).first() if value else None


# ------------------------------------------------------------------ routes

ROUTE_SCALARS = ("name", "path", "path_type", "priority", "strip_prefix", "preserve_host", "websocket",
                 "https_redirect", "hsts_max_age", "max_body_size", "forwarded", "acme", "enabled")


class RouteForm(TenantChoiceMixin, ServiceForm):
    tenant = forms.ChoiceField(required=False, help_text="Owner of the route.")
    name = model_field(Route, "name")
    hosts = ListField(required=False, help_text='One host per line: exact names and "*." wildcards.')
    path = model_field(Route, "path")
    path_type = model_field(Route, "path_type")
    methods = ListField(required=False, widget=forms.TextInput(attrs={"placeholder": "GET, POST (empty: any)"}),
                        help_text="Comma-separated; empty matches every method.")
    headers = HeaderMatchField(required=False, help_text="Header matches, one Name: value per line.")
    priority = model_field(Route, "priority")
    pool = forms.ChoiceField(required=False)
    strip_prefix = model_field(Route, "strip_prefix")
    preserve_host = model_field(Route, "preserve_host")
    request_headers = HeaderRulesField(required=False, help_text="Rules applied to the request sent upstream.")
    response_headers = HeaderRulesField(required=False, help_text="Rules applied to the response sent to the client.")
    websocket = model_field(Route, "websocket")
    https_redirect = model_field(Route, "https_redirect")
    hsts_max_age = model_field(Route, "hsts_max_age")
    max_body_size = model_field(Route, "max_body_size")
    forwarded = model_field(Route, "forwarded")
    certificate = forms.ChoiceField(required=False)
    acme = model_field(Route, "acme")
    enabled = model_field(Route, "enabled")

    def __init__(self, *args, principal, instance: Route | None = None, **kwargs):
        if instance is not None and "initial" not in kwargs:
            kwargs["initial"] = route_initial(instance)
        super().__init__(*args, **kwargs)
        self.instance = instance
        self.expect_version(instance)
        self.setup_tenant(principal, instance)
        pools = principal.scope(Pool.objects.select_related("tenant"))
        self.fields["pool"].choices = [("", "—")] + [(str(p.pk), _owned(p)) for p in pools]
        certs = principal.scope(Certificate.objects.select_related("tenant"))
        self.fields["certificate"].choices = [("", "automatic (by hostname)")] + [(str(c.pk), _owned(c)) for c in certs]
        if instance is None:
            for name in ROUTE_SCALARS:
                self.fields[name].initial = Route._meta.get_field(name).get_default()
        self.offer_acme(instance)

    def offer_acme(self, instance: Route | None) -> None:
        """The ACME box only where ACME is configured (or to switch it off on a route that has it)."""
        if not settings.SWITCHYARD_ACME_DIRECTORY and not (instance is not None and instance.acme):
            del self.fields["acme"]
            return
        self.fields["acme"].label = "Automatic certificate (ACME)"
        self.fields["acme"].help_text = ("Order a certificate for these hosts from the ACME CA (HTTP-01) and renew "
                                         "it; the route page shows the order's state.")

    def service_fields(self) -> dict:
        data = self.cleaned_data
        fields = {name: data.get(name) for name in ROUTE_SCALARS}
        for name in ("hosts", "methods", "headers", "request_headers", "response_headers"):
            fields[name] = data.get(name) or ([] if name in ("hosts", "methods", "headers") else {})
        fields["pool"] = int(data["pool"]) if data.get("pool") else None
        fields["certificate"] = int(data["certificate"]) if data.get("certificate") else None
        for name in ROUTE_SCALARS:
            if fields[name] is None:
                fields[name] = Route._meta.get_field(name).get_default()
        return fields


def _owned(obj) -> str:
    return f"{obj.tenant.slug}/{obj.name}" if obj.tenant_id else f"{obj.name} (platform)"


def route_initial(route: Route) -> dict:
    data = {name: getattr(route, name) for name in ROUTE_SCALARS}
    data.update(hosts=route.hosts, methods=", ".join(route.methods or []), headers=route.headers,
                request_headers=route.request_headers, response_headers=route.response_headers,
                pool=str(route.pool_id or ""), certificate=str(route.certificate_id or ""),
                tenant=str(route.tenant_id or ""))
    return data


# ------------------------------------------------------------------ pools

POOL_SCALARS = ("name", "algorithm", "hash_on", "hash_key", "sticky_cookie", "connect_timeout", "read_timeout",
                "retries", "passive_failures", "passive_ejection_seconds", "tls_enabled", "tls_verify",
                "tls_ca_pem", "tls_sni", "health_check_enabled", "health_check_type", "health_check_path",
                "health_check_method", "health_check_expected_statuses", "health_check_host",
                "health_check_interval", "health_check_timeout", "healthy_threshold", "unhealthy_threshold")
POOL_GROUPS = (
    ("Pool", ("tenant", "name", "targets", "algorithm", "hash_on", "hash_key", "sticky_cookie")),
    ("Timeouts and retries", ("connect_timeout", "read_timeout", "retries", "passive_failures",
                              "passive_ejection_seconds")),
    ("Active health check", ("health_check_enabled", "health_check_type", "health_check_path",
                             "health_check_method", "health_check_expected_statuses", "health_check_host",
                             "health_check_interval", "health_check_timeout", "healthy_threshold",
                             "unhealthy_threshold")),
    ("Upstream TLS", ("tls_enabled", "tls_verify", "tls_sni", "tls_ca_pem")),
)


class PoolForm(TenantChoiceMixin, ServiceForm):
    tenant = forms.ChoiceField(required=False, help_text="Owner of the pool.")
    targets = TargetsField(required=False, help_text="One target per line: host:port, then optionally "
                                                     "weight=N and enabled, disabled or draining.")

    def __init__(self, *args, principal, instance: Pool | None = None, **kwargs):
        if instance is not None and "initial" not in kwargs:
            kwargs["initial"] = pool_initial(instance)
        super().__init__(*args, **kwargs)
        for name in POOL_SCALARS:
            field = model_field(Pool, name)
            if name == "tls_ca_pem":
                field.widget = forms.Textarea(attrs={"rows": 3, "placeholder": "-----BEGIN CERTIFICATE-----"})
            if instance is None:
                field.initial = Pool._meta.get_field(name).get_default()
            self.fields[name] = field
        self.fields["note"] = self.fields.pop("note")
        self.instance = instance
        self.expect_version(instance)
        self.setup_tenant(principal, instance)

    def groups(self):
        return [(title, [self[name] for name in names]) for title, names in POOL_GROUPS]

    def service_fields(self) -> dict:
        data = self.cleaned_data
        fields = {}
        for name in POOL_SCALARS:
            value = data.get(name)
            model_f = Pool._meta.get_field(name)
            if value is None and not model_f.null:
                value = model_f.get_default()
            fields[name] = value
        return fields


def pool_initial(pool: Pool) -> dict:
    data = {name: getattr(pool, name) for name in POOL_SCALARS}
    data["tenant"] = str(pool.tenant_id or "")
    data["targets"] = list(pool.targets.order_by("id").values("host", "port", "weight", "state"))
    return data


# ------------------------------------------------------------------ certificates

PEM_CERTIFICATE = forms.Textarea(attrs={"rows": 6,
                                        "placeholder": "-----BEGIN CERTIFICATE-----\n(leaf first, then the chain)"})
PEM_KEY = forms.Textarea(attrs={"rows": 4, "placeholder": "-----BEGIN PRIVATE KEY-----", "autocomplete": "off"})
PEM_ROOTS = forms.Textarea(attrs={"rows": 2})
ROOTS_HELP = "Optional: your own CA, to verify the chain against."


class CertificateForm(TenantChoiceMixin, ServiceForm):
    tenant = forms.ChoiceField(required=False)
    name = forms.CharField(required=False, max_length=200)
    certificate_pem = forms.CharField(required=False, widget=PEM_CERTIFICATE, label="Certificate (PEM)",
                                      help_text="Leaf first, then the chain.")
    private_key_pem = forms.CharField(required=False, widget=PEM_KEY, label="Private key (PEM)",
                                      help_text="Write-only: stored encrypted, never shown again.")
    ca_bundle_pem = forms.CharField(required=False, widget=PEM_ROOTS, label="Extra trusted roots (PEM)",
                                    help_text=ROOTS_HELP)

    def __init__(self, *args, principal, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["note"] = self.fields.pop("note")
        self.setup_tenant(principal)


class CertificateEditForm(ServiceForm):
    """Rename or renew a certificate in place (the routes using it keep it): an empty
    certificate keeps the stored one, an empty key keeps the stored key."""
    name = forms.CharField(required=False, max_length=200)
    certificate_pem = forms.CharField(required=False, widget=PEM_CERTIFICATE, label="Renewed certificate (PEM)",
                                      help_text="Leave empty to keep the current one. Leaf first, then the chain.")
    private_key_pem = forms.CharField(required=False, widget=PEM_KEY, label="New private key (PEM)",
                                      help_text="Write-only. Leave empty to keep the stored key (it must match).")
    ca_bundle_pem = forms.CharField(required=False, widget=PEM_ROOTS, label="Extra trusted roots (PEM)",
                                    help_text=ROOTS_HELP)

    def __init__(self, *args, instance: Certificate, **kwargs):
        kwargs.setdefault("initial", {"name": instance.name})
        super().__init__(*args, **kwargs)
        self.fields["note"] = self.fields.pop("note")
        self.expect_version(instance)

    def edited_fields(self) -> dict:
        fields = {"name": self.cleaned_data.get("name") or ""}
        if self.cleaned_data.get("certificate_pem"):
            fields["certificate_pem"] = self.cleaned_data["certificate_pem"]
        return fields

    def replacement(self, current: Certificate) -> dict:
        """Keyword arguments for ``certs.services.replace_certificate`` of ``current``."""
        data = self.cleaned_data
        return {"name": data.get("name") or "",
                "certificate_pem": data.get("certificate_pem") or current.certificate_pem,
                "private_key_pem": data.get("private_key_pem") or None,
                "ca_bundle_pem": data.get("ca_bundle_pem") or ""}


# ------------------------------------------------------------------ tenants

class TenantForm(ServiceForm):
    slug = model_field(Tenant, "slug")
    name = model_field(Tenant, "name")
    max_routes = model_field(Tenant, "max_routes")
    max_pools = model_field(Tenant, "max_pools")
    max_targets = model_field(Tenant, "max_targets")
    max_certificates = model_field(Tenant, "max_certificates")
    allowed_networks = JSONListField(required=False, help_text="Networks this tenant's targets may use although "
                                                               "the default policy forbids them, e.g. 10.20.0.0/16.")
    FIELDS = ("slug", "name", "max_routes", "max_pools", "max_targets", "max_certificates", "allowed_networks")

    def __init__(self, *args, instance: Tenant | None = None, **kwargs):
        if instance is not None and "initial" not in kwargs:
            kwargs["initial"] = {name: getattr(instance, name) for name in self.FIELDS}
        super().__init__(*args, **kwargs)
        self.fields["note"] = self.fields.pop("note")
        if instance is None:
            for name in self.FIELDS[2:6]:
                self.fields[name].initial = Tenant._meta.get_field(name).get_default()
        else:
            self.fields["slug"].disabled = True
            self.expect_version(instance)

    def service_fields(self) -> dict:
        fields = {name: self.cleaned_data.get(name) for name in self.FIELDS if not self.fields[name].disabled}
        for name in ("slug", "name"):
            if name in fields and fields[name] is None:
                fields[name] = ""
        for name in self.FIELDS[2:6]:
            if fields.get(name) is None:
                fields[name] = Tenant._meta.get_field(name).get_default()
        fields["allowed_networks"] = fields.get("allowed_networks") or []
        return fields


class DelegationForm(ServiceForm):
    suffix = forms.CharField(required=False, max_length=253,
                             help_text="e.g. shop.example.com: covers itself and every name below it.")


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Membership.ROLES)
    field_aliases = {"user": "username"}


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.ROLES)


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, required=False)
    role = forms.ChoiceField(choices=Membership.ROLES)


# ------------------------------------------------------------------ alert channels

class AlertChannelForm(TenantChoiceMixin, ServiceForm):
    tenant = forms.ChoiceField(required=False)
    name = forms.CharField(required=False, max_length=200)
    kind = forms.ChoiceField(choices=AlertChannel.KINDS)
    emails = ListField(required=False, help_text="For e-mail channels: one address per line.")
    url = forms.CharField(required=False, max_length=200, help_text="For webhook channels.")
    secret = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False),
                             help_text="Webhook signing secret. Write-only: leave empty to keep the stored one.")
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args, principal, instance: AlertChannel | None = None, **kwargs):
        if instance is not None and "initial" not in kwargs:
            kwargs["initial"] = {"name": instance.name, "kind": instance.kind, "emails": instance.emails,
                                 "url": instance.url, "enabled": instance.enabled}
        super().__init__(*args, **kwargs)
        del self.fields["note"]
        self.expect_version(instance)
        self.setup_tenant(principal, instance)

    def edited_fields(self) -> dict:
        return self.channel_fields()

    def channel_fields(self) -> dict:
        """The channel's fields as typed (the secret apart: it is write-only)."""
        data = self.cleaned_data
        return {"tenant": data.get("tenant"), "name": (data.get("name") or "").strip(), "kind": data["kind"],
                "emails": data.get("emails") or [], "url": (data.get("url") or "").strip(),
                "enabled": data.get("enabled", False)}


# ------------------------------------------------------------------ sign-in

class ThrottledLoginMixin:
    """Says why a sign-in the throttle refused failed, instead of "wrong password"."""

    def get_invalid_login_error(self):
        if throttle.was_throttled(self.request):
            return ValidationError(throttle.refusal_message(), code="throttled")
        return super().get_invalid_login_error()


class LoginForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class AdminLoginForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass
