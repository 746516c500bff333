"""New proxy host: host names, upstream URLs and TLS in one form; the pool and the route
are created as one change (one preview, one publish, one version) by
``proxy.hosts.create_proxy_host``. The full route and pool forms stay for the rest."""
from __future__ import annotations

from django import forms as django_forms
from django.contrib.auth.decorators import login_required
from django.urls import reverse

from controlplane.audit.services import Actor
from controlplane.proxy import hosts
from controlplane.proxy.models import AccessList, Certificate
from controlplane.tenancy.access import principal as get_principal

from ..forms import ListField, ServiceForm, TenantChoiceMixin
from .common import object_for_edit
from .flows import change_flow

ACME = "acme"


def _owned(cert) -> str:
    return f"{cert.tenant.slug}/{cert.name}" if cert.tenant_id else f"{cert.name} (platform)"


class ProxyHostForm(TenantChoiceMixin, ServiceForm):
    tenant = django_forms.ChoiceField(required=False, label="Owner", help_text="The tenant the host belongs to.")
    hosts = ListField(required=False, label="Host names",
                      widget=django_forms.Textarea(attrs={"rows": 2, "placeholder": "app.example.com"}),
                      help_text='One per line (or comma-separated); "*.example.com" matches every name below it.')
    upstreams = ListField(required=False, label="Upstream URLs",
                          widget=django_forms.Textarea(attrs={"rows": 2, "placeholder": "http://10.0.0.5:8080"}),
                          help_text="One per line. Several make a pool that balances between them; "
                                    "https:// talks TLS to the upstream and verifies its certificate.")
    tls = django_forms.ChoiceField(required=False, label="TLS certificate",
                                   help_text="None: plain HTTP, and HTTPS only where a certificate of the owner "
                                             "covers the name. Upload certificates under Certificates.")
    https_redirect = django_forms.BooleanField(required=False, label="Redirect HTTP to HTTPS",
                                               help_text="Answer plain-HTTP requests with 308 to https://.")
    websocket = django_forms.BooleanField(required=False, label="Allow WebSocket",
                                          help_text="Pass WebSocket upgrades through to the upstream.")
    access_list = django_forms.ChoiceField(
        required=False, label="Access list",
        help_text="Who may reach the host: an access list of the owner (address rules, basic-auth users). "
                  "Create lists under Access lists.")
    name = django_forms.CharField(required=False, max_length=200, label="Name (optional)",
                                  help_text="Names the route and the pool; empty: the first host name.")

    field_aliases = {"certificate": "tls", "acme": "tls"}

    def __init__(self, *args, principal, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["note"] = self.fields.pop("note")
        self.setup_tenant(principal)
        choices = [("", "None")]
        if hosts.acme_available():
            choices.append((ACME, "Automatic certificate (ACME)"))
        certs = principal.scope(Certificate.objects.select_related("tenant")).order_by("tenant__slug", "name")
        choices += [(str(c.pk), f"{_owned(c)} — {', '.join(c.sans or [])}") for c in certs]
        self.fields["tls"].choices = choices
        acls = principal.scope(AccessList.objects.select_related("tenant")).order_by("tenant__slug", "name")
        self.fields["access_list"].choices = [("", "None (everyone)")] + [
            (str(a.pk), f"{_owned(a)}{' — basic auth' if a.users else ''}") for a in acls]

    def service_fields(self) -> dict:
        data = self.cleaned_data
        tls = data.get("tls") or ""
        return {"hosts": data.get("hosts") or [], "upstreams": data.get("upstreams") or [],
                "certificate": int(tls) if tls.isdigit() else None, "acme": tls == ACME,
                "https_redirect": bool(data.get("https_redirect")), "websocket": bool(data.get("websocket")),
                "name": (data.get("name") or "").strip(),
                "access_list": int(data["access_list"]) if (data.get("access_list") or "").isdigit() else None}


@login_required
def proxy_host_new(request):
    p = get_principal(request)
    object_for_edit(p, None, None)  # 403 for a read-only user
    form = ProxyHostForm(request.POST or None, principal=p)
    actor = Actor.from_request(request)

    def action(note):
        host = hosts.create_proxy_host(actor, tenant=form.cleaned_data.get("tenant"), note=note,
                                       **form.service_fields())
        return host.route

    return change_flow(request, form=form, obj=None, kind="proxy host", action=action,
                       template="dashboard/proxy_hosts/form.html", context={},
                       title="New proxy host",
                       success_url=lambda route: reverse("dashboard:route", args=[route.pk]))
