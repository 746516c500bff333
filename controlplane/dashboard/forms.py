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
from django.utils.html import format_html

from controlplane.alerts.models import AlertChannel
from controlplane.proxy import acme_choice
from controlplane.proxy.models import AccessList, Certificate, Pool, Route, Target
from controlplane.proxy.services import etag_of
from controlplane.tenancy.models import Membership, Tenant

from . import throttle
from .ratelimitforms import RateLimitFields, rate_limit_initial
from .user_rows import UserRowsMixin

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
    widget = forms.Textarea(attrs={"rows": 2, "placeholder": "X-Canary: 1", "data-rows-editor": "matches"})

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
    widget = forms.Textarea(attrs={"rows": 3, "placeholder": "set X-Env: prod\nadd X-Via-Switchyard: 1\nremove Server",
                                   "data-rows-editor": "rules"})

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


# ------------------------------------------------------------------ units

KIB, MIB, GIB = 1024, 1024 ** 2, 1024 ** 3
SIZE_UNITS = {"": 1, "b": 1, "byte": 1, "bytes": 1, "k": KIB, "kb": KIB, "kib": KIB,
              "m": MIB, "mb": MIB, "mib": MIB, "g": GIB, "gb": GIB, "gib": GIB}
SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-z]*)$")
SIZE_HELP = "write a size such as 512 KiB, 10 MiB or 1048576 (bytes)"


def format_size(value):
    """1048576 → "1 MiB"; a size that is no whole number of KiB stays exact: "1500 bytes"."""
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if value and value % factor == 0:
            return f"{value // factor} {unit}"
    return "0" if value == 0 else f"{value} bytes"


class SizeField(forms.CharField):
    """A size in bytes, written as a person writes it: "512 KiB", "10 MiB", "1.5 MiB" or
    a plain number of bytes (K, M, G and KB, MB, GB count 1024 too, as in nginx)."""
    widget = forms.TextInput(attrs={"placeholder": "e.g. 1 MiB", "spellcheck": "false", "autocomplete": "off"})

    def prepare_value(self, value):
        return format_size(value)

    def to_python(self, value):
        text = (super().to_python(value) or "").strip().lower()
        if not text:
            return None
        m = SIZE_RE.match(text)
        if not m or m.group(2) not in SIZE_UNITS:
            raise ValidationError(f"{value.strip()}: {SIZE_HELP}")
        size = float(m.group(1)) * SIZE_UNITS[m.group(2)]
        if size != int(size):
            raise ValidationError(f"{value.strip()}: not a whole number of bytes")
        return int(size)


class UnitInput(forms.NumberInput):
    """A number input followed by its unit ("seconds"), which screen readers read with it."""

    def __init__(self, unit: str = "seconds", attrs=None):
        super().__init__(attrs={"step": "any", "min": "0", "inputmode": "decimal", **(attrs or {})})
        self.unit = unit

    def render(self, name, value, attrs=None, renderer=None):
        attrs = dict(attrs or {})
        unit_id = f"{attrs.get('id') or 'id_' + name}-unit"
        attrs["aria-describedby"] = " ".join(filter(None, (attrs.get("aria-describedby"), unit_id)))
        return format_html('<span class="unit-input">{}<span class="unit" id="{}">{}</span></span>',
                           super().render(name, value, attrs, renderer), unit_id, self.unit)


def seconds_field(model, name, **kwargs):
    field = model_field(model, name, widget=UnitInput("seconds"))
    if isinstance(field, forms.IntegerField):
        field.widget.attrs["step"] = "1"
    for key, value in kwargs.items():
        setattr(field, key, value)
    return field


def relabel(form, labels: dict) -> None:
    """Human labels (and help texts) for the fields a form has: {name: label or (label, help)}."""
    for name, text in labels.items():
        if name in form.fields:
            label, help_text = text if isinstance(text, tuple) else (text, None)
            form.fields[name].label = label
            if help_text is not None:
                form.fields[name].help_text = help_text


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
                 "https_redirect", "hsts_max_age", "max_body_size", "forwarded", "acme", "enabled",
                 "acme_challenge", "acme_profile", "maintenance", "retry_after", "forward_authorization")


ROUTE_LABELS = {
    "tenant": "Tenant",
    "hosts": "Host names",
    "path_type": ("Path match", "Prefix: the path and everything below it; exact: only this path; "
                                "regex: a regular expression (RE2)."),
    "methods": "HTTP methods",
    "headers": ("Header matches", "Only requests that carry these headers (name and value) match."),
    "priority": ("Priority", "Among regex routes, higher is tried first."),
    "pool": "Upstream pool",
    "strip_prefix": ("Strip the path prefix", "Forward /api/users as /users for the path /api."),
    "preserve_host": ("Keep the client's Host header", "Off: the upstream gets the target's host:port."),
    "request_headers": ("Request headers", "Set, add or remove headers on the request sent upstream."),
    "response_headers": ("Response headers", "Set, add or remove headers on the response sent to the client."),
    "websocket": "Allow WebSocket",
    "https_redirect": ("Redirect HTTP to HTTPS", "Plain-HTTP requests get a 308 to the https:// URL."),
    "forwarded": ("Send a Forwarded header", "RFC 7239, besides X-Forwarded-For."),
    "certificate": "TLS certificate",
    "enabled": "Enabled",
    "access_list": ("Access list", "Who may reach the route, by client address; others get 403. "
                                   "Only access lists of the route's own owner can be used."),
    "maintenance": ("Maintenance mode", "Answer every request with 503 and a maintenance page "
                                        "(JSON for API clients); the pool gets no traffic."),
    "retry_after": ("Retry-After", "Seconds the maintenance answer tells clients to wait; 0 sends no header."),
}


class RouteForm(UserRowsMixin, TenantChoiceMixin, ServiceForm, RateLimitFields):
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
    hsts_max_age = seconds_field(Route, "hsts_max_age", label="HSTS max-age",
                                 help_text="0 sends no Strict-Transport-Security header; one year is 31536000.")
    max_body_size = SizeField(required=False, label="Maximum body size",
                              help_text="Larger request bodies get 413. E.g. 512 KiB or 10 MiB (1 KiB = 1024 bytes); "
                                        "0: no limit.")
    forwarded = model_field(Route, "forwarded")
    certificate = forms.ChoiceField(required=False)
    acme = model_field(Route, "acme")
    acme_challenge = model_field(Route, "acme_challenge")
    acme_profile = model_field(Route, "acme_profile")
    enabled = model_field(Route, "enabled")
    access_list = forms.ChoiceField(required=False)
    forward_authorization = model_field(Route, "forward_authorization", label="Forward the Authorization header",
                                        help_text="Only with basic-auth users (the route's own or its access "
                                                  "list's): pass the client's credentials on to the upstream "
                                                  "(off: removed).")
    # basic auth on the route itself (Route.basic_auth): the realm here, the users in rows
    # (dashboard/user_rows.py); off while there is no user
    basic_auth_realm = forms.CharField(
        required=False, max_length=200, label="Realm",
        widget=forms.TextInput(attrs={"placeholder": "the route's name", "spellcheck": "false"}),
        help_text="Printable ASCII; browsers show it in the password prompt. Empty: the route's name.")
    maintenance = model_field(Route, "maintenance")
    retry_after = seconds_field(Route, "retry_after")
    # forward auth (Route.forward_auth, one object): off while the URL is empty
    forward_auth_url = forms.CharField(
        required=False, max_length=2048, label="Forward auth URL",
        widget=forms.URLInput(attrs={"placeholder": "https://auth.example.com/api/authz/forward-auth",
                                     "spellcheck": "false", "autocomplete": "off"}),
        help_text="Before forwarding, the node asks this URL (Authelia, Authentik, oauth2-proxy); 2xx lets the "
                  "request through, any other answer (e.g. a redirect to the login page) goes to the client. "
                  "Empty: off.")
    forward_auth_headers = ListField(
        required=False, label="Headers copied from the auth answer",
        widget=forms.TextInput(attrs={"placeholder": "Remote-User, Remote-Groups, Remote-Email, Remote-Name",
                                      "spellcheck": "false"}),
        help_text="Comma-separated; copied into the upstream request. Client-sent headers of these names are "
                  "always removed.")
    forward_auth_timeout = forms.FloatField(
        required=False, min_value=0.1, max_value=30, initial=5, label="Forward auth timeout",
        widget=UnitInput("seconds"), help_text="No answer in time: 503, nothing forwarded.")
    field_aliases = {**ServiceForm.field_aliases, "forward_auth": "forward_auth_url",
                     "rate_limit": "rate_limit_rate", "basic_auth": "basic_auth_realm"}

    def basic_auth_value(self) -> dict | None:
        """Route.basic_auth as the service takes it (controlplane.proxy.basic_auth); None
        without users."""
        users = self.users_value()
        if not users:
            return None
        return {"realm": (self.cleaned_data.get("basic_auth_realm") or "").strip(), "users": users}

    def clean(self):
        cleaned = super().clean()
        self.clean_user_rows()  # typed passwords hashed once; the page keeps only the hash
        return cleaned

    def forward_auth_value(self) -> dict | None:
        data = self.cleaned_data
        url = (data.get("forward_auth_url") or "").strip()
        if not url:
            return None
        timeout = data.get("forward_auth_timeout")
        return {"url": url, "response_headers": data.get("forward_auth_headers") or [],
                "timeout": 5.0 if timeout is None else timeout}

    def __init__(self, *args, principal, instance: Route | None = None, **kwargs):
        if instance is not None and "initial" not in kwargs:
            kwargs["initial"] = route_initial(instance)
        super().__init__(*args, **kwargs)
        auth = instance.basic_auth if instance is not None and isinstance(instance.basic_auth, dict) else {}
        self.setup_user_rows(instance, users=auth.get("users") or [])  # basic auth (dashboard/user_rows.py)
        self.instance = instance
        self.expect_version(instance)
        self.setup_tenant(principal, instance)
        pools = principal.scope(Pool.objects.select_related("tenant"))
        self.fields["pool"].choices = [("", "—")] + [(str(p.pk), _owned(p)) for p in pools]
        certs = principal.scope(Certificate.objects.select_related("tenant"))
        self.fields["certificate"].choices = [("", "automatic (by hostname)")] + [(str(c.pk), _owned(c)) for c in certs]
        acls = principal.scope(AccessList.objects.select_related("tenant"))
        self.fields["access_list"].choices = [("", "none (everyone)")] + [(str(a.pk), _owned(a)) for a in acls]
        if instance is None:
            for name in ROUTE_SCALARS:
                self.fields[name].initial = Route._meta.get_field(name).get_default()
        self.offer_acme(instance)
        relabel(self, ROUTE_LABELS)

    def offer_acme(self, instance: Route | None) -> None:
        """The ACME box only where ACME is configured (or to switch it off on a route that has it)."""
        if not settings.SWITCHYARD_ACME_DIRECTORY and not (instance is not None and instance.acme):
            for name in ("acme", "acme_challenge", "acme_profile"):
                del self.fields[name]
            return
        self.fields["acme"].label = "Automatic certificate (ACME)"
        self.fields["acme"].help_text = ("Order a certificate for these hosts from the ACME CA and renew it; the "
                                         "route page shows the order's state. Switched off, the certificate stays "
                                         "attached but is no longer renewed.")
        self.fields["acme_challenge"].label = "ACME challenge"
        self.fields["acme_challenge"].choices = [("", f"default ({acme_choice.default_method()}; DNS-01 for "
                                                      "wildcards)" if acme_choice.dns_configured() else
                                                  f"default ({acme_choice.default_method()})"),
                                                 *[(m, m.upper()) for m in acme_choice.METHODS]]
        self.fields["acme_challenge"].help_text = ("How the CA checks these hosts: HTTP-01 (port 80), TLS-ALPN-01 "
                                                   "(port 443) or DNS-01 (the operator's DNS; needed for wildcards).")
        self.fields["acme_profile"].label = "ACME profile"
        self.fields["acme_profile"].help_text = ("The CA's certificate profile, e.g. classic, tlsserver, shortlived; "
                                                 "empty: the installation's default.")

    def service_fields(self) -> dict:
        data = self.cleaned_data
        fields = {name: data.get(name) for name in ROUTE_SCALARS}
        for name in ("hosts", "methods", "headers", "request_headers", "response_headers"):
            fields[name] = data.get(name) or ([] if name in ("hosts", "methods", "headers") else {})
        fields["pool"] = int(data["pool"]) if data.get("pool") else None
        fields["certificate"] = int(data["certificate"]) if data.get("certificate") else None
        fields["access_list"] = int(data["access_list"]) if data.get("access_list") else None
        fields["forward_auth"] = self.forward_auth_value()
        fields["rate_limit"] = self.rate_limit_value()
        fields["basic_auth"] = self.basic_auth_value()
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
                access_list=str(route.access_list_id or ""),
                tenant=str(route.tenant_id or ""))
    fa = route.forward_auth if isinstance(route.forward_auth, dict) else {}
    data.update(forward_auth_url=fa.get("url", ""), forward_auth_headers=", ".join(fa.get("response_headers") or []),
                forward_auth_timeout=fa.get("timeout", 5.0))
    data.update(rate_limit_initial(route.rate_limit))
    auth = route.basic_auth if isinstance(route.basic_auth, dict) else {}
    data.update(basic_auth_realm=auth.get("realm", ""))
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


POOL_SECONDS = ("connect_timeout", "read_timeout", "passive_ejection_seconds", "health_check_interval",
                "health_check_timeout")
POOL_LABELS = {
    "tenant": "Tenant",
    "algorithm": "Load balancing",
    "hash_on": ("Hash on", "For consistent hashing: what picks the target."),
    "hash_key": ("Hash header or cookie", "The header or cookie name, when hashing on one."),
    "sticky_cookie": ("Sticky-session cookie", "Cookie name for sticky sessions; empty: none."),
    "connect_timeout": "Connect timeout",
    "read_timeout": ("Read timeout", "How long to wait for the upstream's response headers."),
    "retries": ("Retries", "Extra attempts on another target, for idempotent requests that never reached one."),
    "passive_failures": ("Failures before ejection", "Consecutive failed requests that take a target out "
                                                     "of rotation for a while."),
    "passive_ejection_seconds": ("Ejection time", "Doubles each time the same target is ejected again."),
    "tls_enabled": "Connect to the targets with TLS",
    "tls_verify": "Verify the targets' certificates",
    "tls_sni": ("TLS server name", "SNI sent to the targets and the name their certificate must carry; "
                                   "empty: the target's host."),
    "tls_ca_pem": ("CA bundle (PEM)", "The CA certificates to verify the targets with; empty: the system's."),
    "health_check_enabled": "Check the targets actively",
    "health_check_type": ("Check type", "HTTP: a request that must answer an expected status; TCP: a connect."),
    "health_check_path": "Check path",
    "health_check_method": "Check method",
    "health_check_expected_statuses": ("Expected statuses", "e.g. 200-399 or 200,204."),
    "health_check_host": ("Check Host header", "Empty: the target's host."),
    "health_check_interval": "Check every",
    "health_check_timeout": "Check timeout",
    "healthy_threshold": ("Healthy after", "Successful checks in a row that bring a target back."),
    "unhealthy_threshold": ("Unhealthy after", "Failed checks in a row that take a target out."),
}


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
            elif name in POOL_SECONDS:
                field.widget = UnitInput("seconds")
            if instance is None:
                field.initial = Pool._meta.get_field(name).get_default()
            self.fields[name] = field
        self.fields["note"] = self.fields.pop("note")
        self.instance = instance
        self.expect_version(instance)
        self.setup_tenant(principal, instance)
        relabel(self, POOL_LABELS)

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
PEM_FILE_LIMIT = 256 * 1024
PEM_ACCEPT = ".pem,.crt,.cer,.cert,.key,.txt,application/x-pem-file,application/x-x509-ca-cert"


def pem_file_field(label: str) -> forms.FileField:
    return forms.FileField(required=False, label=label, widget=forms.FileInput(attrs={"accept": PEM_ACCEPT}),
                           help_text="Or choose the file: it takes the place of the pasted text.")


class PemFilesMixin:
    """File pickers beside the PEM text areas (plain multipart, no JS needed): a chosen
    file's text replaces the pasted text, and is what the form shows again when the
    upload is refused, so nothing has to be chosen twice."""
    pem_files = {"certificate_file": "certificate_pem", "private_key_file": "private_key_pem"}

    def clean(self):
        data = super().clean()
        for file_name, text_name in self.pem_files.items():
            upload = data.get(file_name)
            if not upload:
                continue
            text = self._read_pem(file_name, upload)
            if text is not None:
                data[text_name] = text
                self.data = self.data.copy()
                self.data[text_name] = text
        return data

    def _read_pem(self, file_name, upload) -> str | None:
        if upload.size > PEM_FILE_LIMIT:
            self.add_error(file_name, f"{upload.name} is larger than {PEM_FILE_LIMIT // 1024} KiB: "
                                      "choose the PEM file")
            return None
        try:
            return upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            self.add_error(file_name, f"{upload.name} is not a PEM text file (a DER file converts with "
                                      "openssl x509 -inform DER -in cert.der -out cert.pem)")
            return None


class CertificateForm(PemFilesMixin, TenantChoiceMixin, ServiceForm):
    tenant = forms.ChoiceField(required=False)
    name = forms.CharField(required=False, max_length=200)
    certificate_pem = forms.CharField(required=False, widget=PEM_CERTIFICATE, label="Certificate (PEM)",
                                      help_text="Leaf first, then the chain.")
    certificate_file = pem_file_field("Certificate file")
    private_key_pem = forms.CharField(required=False, widget=PEM_KEY, label="Private key (PEM)",
                                      help_text="Write-only: stored encrypted, never shown again.")
    private_key_file = pem_file_field("Private key file")
    ca_bundle_pem = forms.CharField(required=False, widget=PEM_ROOTS, label="Extra trusted roots (PEM)",
                                    help_text=ROOTS_HELP)

    def __init__(self, *args, principal, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["note"] = self.fields.pop("note")
        self.setup_tenant(principal)


class CertificateEditForm(PemFilesMixin, ServiceForm):
    """Rename or renew a certificate in place (the routes using it keep it): an empty
    certificate keeps the stored one, an empty key keeps the stored key."""
    name = forms.CharField(required=False, max_length=200)
    certificate_pem = forms.CharField(required=False, widget=PEM_CERTIFICATE, label="Renewed certificate (PEM)",
                                      help_text="Leave empty to keep the current one. Leaf first, then the chain.")
    certificate_file = pem_file_field("Renewed certificate file")
    private_key_pem = forms.CharField(required=False, widget=PEM_KEY, label="New private key (PEM)",
                                      help_text="Write-only. Leave empty to keep the stored key (it must match).")
    private_key_file = pem_file_field("New private key file")
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

class TenantForm(ServiceForm, RateLimitFields):
    slug = model_field(Tenant, "slug")
    name = model_field(Tenant, "name")
    max_routes = model_field(Tenant, "max_routes")
    max_pools = model_field(Tenant, "max_pools")
    max_targets = model_field(Tenant, "max_targets")
    max_certificates = model_field(Tenant, "max_certificates")
    allowed_networks = JSONListField(required=False, help_text="Networks this tenant's targets may use although "
                                                               "the default policy forbids them, e.g. 10.20.0.0/16.")
    FIELDS = ("slug", "name", "max_routes", "max_pools", "max_targets", "max_certificates", "allowed_networks")
    field_aliases = {**ServiceForm.field_aliases, "rate_limit": "rate_limit_rate"}

    def __init__(self, *args, instance: Tenant | None = None, **kwargs):
        if instance is not None and "initial" not in kwargs:
            kwargs["initial"] = {name: getattr(instance, name) for name in self.FIELDS}
            kwargs["initial"].update(rate_limit_initial(instance.rate_limit))
        super().__init__(*args, **kwargs)
        for name in (*RateLimitFields.base_fields, "note"):  # after the tenant's own fields
            self.fields[name] = self.fields.pop(name)
        self.fields["rate_limit_rate"].help_text = ("Requests per second over all this tenant's routes together "
                                                    "(each route's own limit applies as well). Empty: no limit.")
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
        fields["rate_limit"] = self.rate_limit_value()
        return fields


class DelegationForm(ServiceForm):
    suffix = forms.CharField(required=False, max_length=253,
                             help_text="e.g. shop.example.com: covers itself and every name below it.")


class PrefixedIdsMixin:
    """Several small forms share the tenant page: their ids must not collide (labels)."""
    id_prefix = ""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", f"{self.id_prefix}-%s")
        super().__init__(*args, **kwargs)


class MemberForm(PrefixedIdsMixin, forms.Form):
    id_prefix = "member"
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Membership.ROLES)
    field_aliases = {"user": "username"}


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.ROLES)


class TokenForm(PrefixedIdsMixin, forms.Form):
    id_prefix = "token"
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
    send_open_alerts = forms.BooleanField(
        required=False, initial=True, label="Also send the alerts that are still open",
        help_text="Once, to this new channel only: certificates still expiring, targets still down, "
                  "nodes still disconnected.")
    # The fields that belong to one kind only (the template groups them; JS hides the others).
    KIND_FIELDS = {AlertChannel.EMAIL: ("emails",), AlertChannel.WEBHOOK: ("url", "secret")}

    def __init__(self, *args, principal, instance: AlertChannel | None = None, **kwargs):
        if instance is not None and "initial" not in kwargs:
            kwargs["initial"] = {"name": instance.name, "kind": instance.kind, "emails": instance.emails,
                                 "url": instance.url, "enabled": instance.enabled}
        super().__init__(*args, **kwargs)
        del self.fields["note"]
        if instance is not None:
            del self.fields["send_open_alerts"]  # only a new channel gets the backlog
        self.fields["emails"].label, self.fields["url"].label = "E-mail addresses", "Webhook URL"
        self.fields["emails"].help_text = "One address per line."
        self.fields["url"].help_text = "Receives a signed JSON POST (X-Switchyard-Signature)."
        self.expect_version(instance)
        self.setup_tenant(principal, instance)

    def common_fields(self):
        kind_only = {name for names in self.KIND_FIELDS.values() for name in names}
        return [f for f in self.visible_fields() if f.name not in kind_only]

    def kind_groups(self):
        """(kind, label, bound fields) for each channel kind."""
        return [(kind, label, [self[name] for name in self.KIND_FIELDS[kind]]) for kind, label in AlertChannel.KINDS]

    def edited_fields(self) -> dict:
        return self.channel_fields()

    def channel_fields(self) -> dict:
        """The channel's fields as typed (the secret apart: it is write-only)."""
        data = self.cleaned_data
        kind = data["kind"]  # the other kind's fields are not kept (the page hid them)
        return {"tenant": data.get("tenant"), "name": (data.get("name") or "").strip(), "kind": kind,
                "emails": (data.get("emails") or []) if kind == AlertChannel.EMAIL else [],
                "url": (data.get("url") or "").strip() if kind == AlertChannel.WEBHOOK else "",
                "enabled": data.get("enabled", False)}


# ------------------------------------------------------------------ sign-in

class ThrottledLoginMixin:
    """Says why a sign-in the throttle refused failed, instead of "wrong password"."""

    def get_invalid_login_error(self):
        if throttle.was_throttled(self.request):
            return ValidationError(throttle.refusal_message(), code="throttled")
        from controlplane.accounts import sso
        if not sso.local_passwords():
            # the same words for every username: they do not tell which one is the break-glass account
            return ValidationError(f"Password sign-in is off: sign in with {sso.display_name()}. (A password "
                                   "works only for the break-glass account.)", code="passwords_off")
        return super().get_invalid_login_error()


class LoginForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class AdminLoginForm(ThrottledLoginMixin, AdminAuthenticationForm):
    """The admin's sign-in has no code step: an account with two-factor on (or required)
    signs in on the dashboard's /login/ and then opens /admin/ with that session."""

    def confirm_login_allowed(self, user):
        super().confirm_login_allowed(user)
        from controlplane.accounts import twofactor
        if twofactor.is_enabled(user) or twofactor.is_required(user):
            raise ValidationError("This account signs in with two-factor: sign in at /login/ first, "
                                  "then open /admin/.", code="two_factor")


# ------------------------------------------------------------------ access lists

class AccessRulesField(forms.CharField):
    """``allow 10.0.0.0/8`` / ``deny 2001:db8::/32`` per line → [{"action", "cidr"}] in
    order. A line that does not parse goes to the service as it is (it names the rule)."""
    widget = forms.Textarea(attrs={"rows": 6, "placeholder": "allow 192.0.2.0/24\ndeny 2001:db8::/32",
                                   "spellcheck": "false"})

    def prepare_value(self, value):
        if isinstance(value, list):
            return "\n".join(f"{r.get('action', '')} {r.get('cidr', '')}" for r in value if isinstance(r, dict))
        return value

    def to_python(self, value):
        rules = []
        for line in (super().to_python(value) or "").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                action, _, cidr = line.partition(" ")
                rules.append({"action": action.strip(), "cidr": cidr.strip()})
        return rules


class AccessListForm(UserRowsMixin, TenantChoiceMixin, ServiceForm):
    tenant = forms.ChoiceField(required=False, help_text="Owner of the access list; only its routes can use it.")
    satisfy = forms.ChoiceField(choices=[("all", "address and password"), ("any", "address or password")],
                                label="With users, let in", initial="all", required=False,
                                help_text="Only with users (basic auth): all = an allowed address and a valid "
                                          "password; any = either one.")
    name = model_field(AccessList, "name", help_text="Shown in the 403's Proxy-Status details: letters, digits, "
                                                     "spaces, '.', '_' and '-'.")
    rules = AccessRulesField(required=False, label="Rules", help_text=(
        "One rule per line, allow or deny then an IPv4 or IPv6 address or network. Checked in order on the "
        "client address (behind trusted proxies, the address their X-Forwarded-For names): the first rule "
        "that matches decides."))
    default = forms.ChoiceField(choices=AccessList.ACTIONS, label="Everyone else", initial="allow",
                                help_text="What happens to a client no rule matches.")

    def __init__(self, *args, principal, instance: AccessList | None = None, **kwargs):
        if instance is not None and "initial" not in kwargs:
            kwargs["initial"] = {"name": instance.name, "rules": instance.rules, "default": instance.default,
                                 "tenant": str(instance.tenant_id or ""), "satisfy": instance.satisfy}
        super().__init__(*args, **kwargs)
        self.setup_user_rows(instance)  # basic-auth users (dashboard/user_rows.py)
        self.fields["note"] = self.fields.pop("note")
        self.instance = instance
        self.expect_version(instance)
        self.setup_tenant(principal, instance)

    def clean(self):
        cleaned = super().clean()
        self.clean_user_rows()
        return cleaned

    def service_fields(self) -> dict:
        data = self.cleaned_data
        return {"name": data.get("name") or "", "rules": data.get("rules") or [],
                "default": data.get("default") or "allow", "satisfy": data.get("satisfy") or "all",
                "users": self.users_value()}
