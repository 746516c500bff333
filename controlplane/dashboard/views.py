"""Dashboard pages (SPEC 8). Views scope every query with ``tenancy.access``, parse
forms, and call the same services as the API; they never validate on their own.

Scoping rules (the API's): staff see everything; a tenant member sees their
tenants' objects only; another tenant's object by id is a 404; viewers read,
editors change routes, pools, certificates and alert channels, owners also
members and API tokens (a forbidden write is a 403).
"""
from __future__ import annotations

import datetime as dt
import json

from django.contrib import messages
from django.contrib.auth import get_user_model, login as auth_login, logout as auth_logout
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Q
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from controlplane.alerts.models import Alert, AlertChannel, Delivery
from controlplane.alerts.services import delete_channel, save_channel
from controlplane.alerts.visibility import with_visible_deliveries
from controlplane.audit.models import AuditEntry
from controlplane.audit.services import Actor, record
from controlplane.certs import services as cert_services
from controlplane.health.models import HealthTransition, TargetHealth
from controlplane.proxy import services
from controlplane.proxy.models import Certificate, Pool, Route, Target
from controlplane.publishing import publisher
from controlplane.publishing.models import ConfigVersion, Node, NodeEvent
from controlplane.tenancy.access import principal as get_principal
from controlplane.tenancy.models import ApiToken, Delegation, Membership, Tenant

from . import changes as change_preview
from . import charts, forms, telemetry, throttle

EXPIRY_WARNING_DAYS = 30
PAGE_SIZE = 50


# =================================================================== helpers

def _page(request, queryset, size=PAGE_SIZE):
    return Paginator(queryset, size).get_page(request.GET.get("page"))


def _require_edit(p, tenant):
    if not p.can_edit(tenant):
        raise PermissionDenied("your role in this tenant is read-only")


def _require_staff(p):
    if not p.staff:
        raise PermissionDenied("platform staff only")


def _note(request) -> str:
    return (request.POST.get("note") or "").strip()[:2000]


def _staff_or_404(p):
    if not p.staff:
        raise Http404("not found")


def _current():
    return publisher.current_version()


# =================================================================== login

def return_url(request, url: str | None, fallback: str) -> str:
    """``url`` (a ``next`` or ``back`` parameter) when it stays on this site, else ``fallback``:
    no other host, no ``javascript:`` or other scheme."""
    if url and url_has_allowed_host_and_scheme(url, {request.get_host()}, require_https=request.is_secure()):
        return url
    return fallback


@sensitive_post_parameters("password")
@csrf_protect
@never_cache
@throttle.with_throttle_status
def login_view(request):
    next_url = return_url(request, request.POST.get("next") or request.GET.get("next"), "")
    if request.user.is_authenticated and request.method == "GET":
        return redirect(next_url or "dashboard:overview")
    form = forms.LoginForm(request, data=request.POST or None)
    if request.method == "POST" and form.is_valid():
        auth_login(request, form.get_user())
        return redirect(next_url or "dashboard:overview")
    return render(request, "dashboard/login.html", {"form": form, "next": next_url})


@require_POST
def logout_view(request):
    auth_logout(request)
    return redirect("dashboard:login")


# =================================================================== overview

@login_required
def overview(request):
    p = get_principal(request)
    current = _current()
    now = timezone.now()
    nodes = list(Node.objects.filter(revoked=False))
    targets = p.scope(Target.objects.select_related("pool", "pool__tenant"), "pool__tenant")
    unhealthy = targets.filter(healthy=False).order_by("-health_changed")
    certs = p.scope(Certificate.objects.select_related("tenant"))
    expiring = certs.filter(not_after__lte=now + dt.timedelta(days=EXPIRY_WARNING_DAYS)).order_by("not_after")
    context = {
        "current": current,
        "nodes": nodes,
        "nodes_current": sum(1 for n in nodes if current and n.applied_hash == current.sha256),
        "nodes_connected": sum(1 for n in nodes if n.connected),
        "unhealthy": unhealthy[:20],
        "unhealthy_count": unhealthy.count(),
        "target_count": targets.count(),
        "expiring": expiring[:10],
        "counts": {
            "routes": p.scope(Route.objects.all()).count(),
            "pools": p.scope(Pool.objects.all()).count(),
            "certificates": certs.count(),
        },
        "alerts": p.scope(Alert.objects.select_related("tenant"))[:8],
        "audit": p.scope(AuditEntry.objects.select_related("tenant"))[:8],
        "traffic": telemetry.overview(p),
        "now": now,
    }
    return render(request, "dashboard/overview.html", context)


# =================================================================== routes

@login_required
def route_list(request):
    p = get_principal(request)
    qs = p.scope(Route.objects.select_related("tenant", "pool", "certificate"))
    q = (request.GET.get("q") or "").strip()
    if q:
        qs = qs.filter(Q(name__icontains=q) | Q(hosts__icontains=q) | Q(path__icontains=q))
    return render(request, "dashboard/routes/list.html", {
        "page": _page(request, qs), "q": q, "can_create": p.can_edit_any,
        "traffic": telemetry.per_route(p),
    })


@login_required
def route_detail(request, pk):
    p = get_principal(request)
    route = p.get_or_404(Route.objects.select_related("tenant", "pool", "certificate"), id=pk)
    history = AuditEntry.objects.filter(object_type="route", object_id=str(route.pk))[:20]
    return render(request, "dashboard/routes/detail.html", {
        "route": route, "can_edit": p.can_edit(route.tenant_id), "history": history,
        "targets": route.pool.targets.all(),
        "traffic": telemetry.route_charts(p, route),
    })


def _change_flow(request, *, form, template, context, action, before=None, success_url, title):
    """The preview → confirm → publish flow shared by the route and pool forms.

    ``action(note)`` calls the service and returns the object. POST ``_action=preview``
    (the default) shows the diff of what the nodes would run; ``_action=publish``
    with the preview's digest makes the change, unless the would-be config differs
    from the one previewed (then the new diff is shown to confirm again).
    """
    preview = None
    if request.method == "POST" and form.is_valid():
        intent = request.POST.get("_action") or "preview"
        try:
            preview = change_preview.preview(lambda: action(""), before=before)
        except ValidationError as exc:
            form.apply_errors(exc)
        else:
            preview.changes = change_preview.filter_changes(preview.changes, get_principal(request))
            if intent == "publish" and request.POST.get("digest") == preview.digest:
                try:
                    obj = action(_note(request))
                except ValidationError as exc:
                    form.apply_errors(exc)
                    preview = None
                else:
                    messages.success(request, f"{title}: saved and published." if not preview.empty
                                     else f"{title}: saved (the config the nodes run did not change).")
                    return redirect(success_url(obj))
            elif intent == "publish":
                messages.warning(request, "The configuration changed since the preview. Review the new diff "
                                          "and confirm again.")
    return render(request, template, {**context, "form": form, "preview": preview, "title": title})



def _object_for_edit(p, queryset, pk):
    """The object an edit form changes (404 outside the user's scope, 403 without the
    role), or None for a new one (403 when the user may create nothing)."""
    obj = p.get_or_404(queryset, id=pk) if pk else None
    if obj is not None:
        _require_edit(p, obj.tenant_id)
    elif not p.can_edit_any:
        raise PermissionDenied("your role is read-only")
    return obj

@login_required
def route_edit(request, pk=None):
    p = get_principal(request)
    route = _object_for_edit(p, Route.objects.select_related("tenant"), pk)
    form = forms.RouteForm(request.POST or None, principal=p, instance=route)
    actor = Actor.from_request(request)
    before = services.serialize(route) if route else None

    def action(note):
        fields = form.service_fields()
        tenant = form.cleaned_data.get("tenant")
        if route is None:
            return services.create_route(actor, tenant=tenant, note=note, **fields)
        fresh = Route.objects.get(pk=route.pk)
        return services.update_route(actor, fresh, note=note, tenant=tenant, **fields)

    return _change_flow(request, form=form, template="dashboard/routes/form.html", context={"route": route},
                        action=action, before=before, title=f"Route {route.name}" if route else "New route",
                        success_url=lambda obj: reverse("dashboard:route", args=[obj.pk]))


@login_required
def route_delete(request, pk):
    p = get_principal(request)
    route = p.get_or_404(Route.objects.select_related("tenant"), id=pk)
    _require_edit(p, route.tenant_id)
    actor = Actor.from_request(request)
    return _delete_flow(request, obj=route, kind="route",
                        action=lambda note: services.delete_route(actor, Route.objects.get(pk=route.pk), note=note),
                        success_url=reverse("dashboard:routes"))


def _delete_flow(request, *, obj, kind, action, success_url):
    p = get_principal(request)
    before = services.serialize(obj)
    preview, errors = None, []
    try:
        preview = change_preview.preview(lambda: action("") or None, before=before)
        preview.changes = change_preview.filter_changes(preview.changes, p)
    except ValidationError as exc:
        errors = [m for ms in exc.message_dict.values() for m in ms] if hasattr(exc, "error_dict") else exc.messages
    if request.method == "POST" and not errors:
        if request.POST.get("digest") == preview.digest:
            try:
                action(_note(request))
            except ValidationError as exc:
                errors = [m for ms in exc.message_dict.values() for m in ms] if hasattr(exc, "error_dict") \
                    else exc.messages
            else:
                messages.success(request, f"{kind.title()} {obj} deleted.")
                return redirect(success_url)
        else:
            messages.warning(request, "The configuration changed since the preview. Review and confirm again.")
    return render(request, "dashboard/confirm_delete.html", {
        "obj": obj, "kind": kind, "preview": preview, "errors": errors,
        "cancel_url": return_url(request, request.GET.get("back"), success_url),
    })


# =================================================================== pools

@login_required
def pool_list(request):
    p = get_principal(request)
    qs = p.scope(Pool.objects.select_related("tenant")).annotate(
        n_targets=Count("targets", distinct=True),
        n_unhealthy=Count("targets", filter=Q(targets__healthy=False), distinct=True),
        n_routes=Count("routes", distinct=True)).order_by("name", "id")
    return render(request, "dashboard/pools/list.html", {"page": _page(request, qs), "can_create": p.can_edit_any})


@login_required
def pool_detail(request, pk):
    p = get_principal(request)
    pool = p.get_or_404(Pool.objects.select_related("tenant"), id=pk)
    targets = list(pool.targets.all())
    checks = {h.target_id: h for h in TargetHealth.objects.filter(target__pool=pool)}
    from controlplane.telemetry import queries as telemetry_queries
    ejected: dict[int, list] = {}
    for e in telemetry_queries.ejections([t.pk for t in targets]):
        ejected.setdefault(e["target_id"], []).append(e)
    for t in targets:
        t.check = checks.get(t.pk)
        t.ejections = ejected.get(t.pk, [])  # passive health, as the nodes report it
    transitions = HealthTransition.objects.filter(pool=pool)
    return render(request, "dashboard/pools/detail.html", {
        "pool": pool, "targets": targets, "transitions": transitions[:50],
        "routes": pool.routes.all(), "can_edit": p.can_edit(pool.tenant_id),
        "health_chart": charts.health_history(pool, targets),
    })


@login_required
def pool_edit(request, pk=None):
    p = get_principal(request)
    pool = _object_for_edit(p, Pool.objects.select_related("tenant"), pk)
    form = forms.PoolForm(request.POST or None, principal=p, instance=pool)
    actor = Actor.from_request(request)
    before = services.serialize(pool) if pool else None

    def action(note):
        fields = form.service_fields()
        tenant = form.cleaned_data.get("tenant")
        targets = form.cleaned_data.get("targets") or []
        if pool is None:
            return services.create_pool(actor, tenant=tenant, targets=targets, note=note, **fields)
        fresh = Pool.objects.get(pk=pool.pk)
        return services.update_pool(actor, fresh, targets=targets, note=note, tenant=tenant, **fields)

    return _change_flow(request, form=form, template="dashboard/pools/form.html", context={"pool": pool},
                        action=action, before=before, title=f"Pool {pool.name}" if pool else "New pool",
                        success_url=lambda obj: reverse("dashboard:pool", args=[obj.pk]))


@login_required
def pool_delete(request, pk):
    p = get_principal(request)
    pool = p.get_or_404(Pool.objects.select_related("tenant"), id=pk)
    _require_edit(p, pool.tenant_id)
    actor = Actor.from_request(request)
    return _delete_flow(request, obj=pool, kind="pool",
                        action=lambda note: services.delete_pool(actor, Pool.objects.get(pk=pool.pk), note=note),
                        success_url=reverse("dashboard:pools"))


# =================================================================== certificates

@login_required
def certificate_list(request):
    p = get_principal(request)
    qs = p.scope(Certificate.objects.select_related("tenant")).annotate(n_routes=Count("routes")).order_by("name", "id")
    return render(request, "dashboard/certificates/list.html", {
        "page": _page(request, qs), "can_create": p.can_edit_any, "now": timezone.now(),
        "expiry_chart": charts.certificate_expiry(p.scope(Certificate.objects.select_related("tenant"))),
    })


@login_required
def certificate_detail(request, pk):
    p = get_principal(request)
    cert = p.get_or_404(Certificate.objects.select_related("tenant"), id=pk)
    return render(request, "dashboard/certificates/detail.html", {
        "cert": cert, "chain": charts.chain_of(cert.certificate_pem), "routes": cert.routes.all(),
        "can_edit": p.can_edit(cert.tenant_id), "now": timezone.now(),
        "expiry_chart": charts.certificate_expiry([cert]),
    })


@login_required
def certificate_new(request):
    p = get_principal(request)
    if not p.can_edit_any:
        raise PermissionDenied("your role is read-only")
    form = forms.CertificateForm(request.POST or None, principal=p)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            cert = cert_services.upload_certificate(
                Actor.from_request(request), tenant=data.get("tenant"), name=data.get("name") or "",
                certificate_pem=data.get("certificate_pem") or "", private_key_pem=data.get("private_key_pem") or "",
                ca_bundle_pem=data.get("ca_bundle_pem") or "", note=_note(request))
        except ValidationError as exc:
            form.apply_errors(exc)
        else:
            messages.success(request, f"Certificate {cert.name} uploaded.")
            return redirect("dashboard:certificate", pk=cert.pk)
    # The key is write-only: never echoed back into the page.
    if form.is_bound:
        form.data = form.data.copy()
        form.data["private_key_pem"] = ""
    return render(request, "dashboard/certificates/form.html", {"form": form})


@login_required
def certificate_delete(request, pk):
    p = get_principal(request)
    cert = p.get_or_404(Certificate.objects.select_related("tenant"), id=pk)
    _require_edit(p, cert.tenant_id)
    actor = Actor.from_request(request)
    return _delete_flow(request, obj=cert, kind="certificate",
                        action=lambda note: services.delete_certificate(actor, Certificate.objects.get(pk=cert.pk),
                                                                        note=note),
                        success_url=reverse("dashboard:certificates"))


# =================================================================== nodes

def _node_rows(nodes, current):
    for n in nodes:
        n.is_current = bool(current and n.applied_hash == current.sha256)
    return nodes


@login_required
def node_list(request):
    current = _current()
    nodes = _node_rows(list(Node.objects.all()), current)
    return render(request, "dashboard/nodes/list.html", {"nodes": nodes, "current": current})


@login_required
def node_detail(request, pk):
    p = get_principal(request)
    try:
        node = Node.objects.get(pk=pk)
    except (Node.DoesNotExist, ValueError):
        raise Http404("not found") from None
    current = _current()
    _node_rows([node], current)
    events = NodeEvent.objects.filter(node=node)[:50]
    return render(request, "dashboard/nodes/detail.html", {
        "node": node, "current": current, "events": events, "show_errors": p.staff})


# =================================================================== changes

def _visible_versions(p):
    qs = ConfigVersion.objects.defer("snapshot")
    if p.staff:
        return qs
    numbers = p.scope(AuditEntry.objects.filter(config_version__isnull=False)).values("config_version")
    return qs.filter(number__in=numbers)


@login_required
def change_list(request):
    p = get_principal(request)
    versions = _visible_versions(p)
    current = _current()
    return render(request, "dashboard/changes/list.html", {
        "page": _page(request, versions), "current": current, "can_rollback": p.staff,
        "numbers": list(versions.values_list("number", flat=True)[:200]),
    })


def _version_or_404(p, number):
    try:
        version = ConfigVersion.objects.get(number=int(number))
    except (ConfigVersion.DoesNotExist, ValueError, TypeError):
        raise Http404("no such version") from None
    if not p.staff and not _visible_versions(p).filter(pk=version.pk).exists():
        raise Http404("no such version")
    return version


@login_required
def change_detail(request, number):
    p = get_principal(request)
    version = _version_or_404(p, number)
    previous = ConfigVersion.objects.filter(number__lt=version.number).order_by("-number").first()
    entries = p.scope(AuditEntry.objects.filter(config_version=version.number))
    return render(request, "dashboard/changes/detail.html", {
        "version": version, "previous": previous, "changes": change_preview.scoped_diff(previous, version, p),
        "entries": entries, "current": _current(), "can_rollback": p.staff,
    })


@login_required
def change_diff(request):
    p = get_principal(request)
    a = _version_or_404(p, request.GET.get("a")) if p.staff else _any_version_or_404(request.GET.get("a"))
    b = _version_or_404(p, request.GET.get("b")) if p.staff else _any_version_or_404(request.GET.get("b"))
    return render(request, "dashboard/changes/diff.html", {
        "a": a, "b": b, "changes": change_preview.scoped_diff(a, b, p)})


def _any_version_or_404(number):
    """Tenant members may compare any two versions: they only see their own objects in it."""
    try:
        return ConfigVersion.objects.get(number=int(number))
    except (ConfigVersion.DoesNotExist, ValueError, TypeError):
        raise Http404("no such version") from None


@login_required
@require_POST
def change_rollback(request, number):
    p = get_principal(request)
    version = _version_or_404(p, number)
    _require_staff(p)  # a rollback restores every tenant's routes: platform staff only
    try:
        new = publisher.rollback(Actor.from_request(request), version.number, _note(request))
    except ValidationError as exc:
        for ms in exc.message_dict.values():
            for m in ms:
                messages.error(request, f"Rollback refused: {m}")
        return redirect("dashboard:changes")
    if new is None:
        messages.info(request, f"The live configuration already is version {version.number}.")
    else:
        messages.success(request, f"Rolled back to version {version.number}: now live as version {new.number}.")
    return redirect("dashboard:changes")


# =================================================================== audit

@login_required
def audit_log(request):
    p = get_principal(request)
    qs = p.scope(AuditEntry.objects.select_related("tenant"))
    filters = {k: (request.GET.get(k) or "").strip() for k in ("object_type", "action", "actor", "q")}
    if filters["object_type"]:
        qs = qs.filter(object_type=filters["object_type"])
    if filters["action"]:
        qs = qs.filter(action=filters["action"])
    if filters["actor"]:
        qs = qs.filter(actor=filters["actor"])
    if filters["q"]:
        qs = qs.filter(Q(object_repr__icontains=filters["q"]) | Q(note__icontains=filters["q"]))
    page = _page(request, qs)
    for entry in page:
        entry.changes = change_preview.object_diff(entry.before, entry.after)
    return render(request, "dashboard/audit.html", {
        "page": page, "filters": filters,
        "object_types": sorted(set(p.scope(AuditEntry.objects.all()).values_list("object_type", flat=True))),
        "actions": sorted(set(p.scope(AuditEntry.objects.all()).values_list("action", flat=True))),
    })


# =================================================================== alerts

@login_required
def alert_list(request):
    p = get_principal(request)
    qs = p.scope(with_visible_deliveries(Alert.objects.select_related("tenant"), p))
    kind = (request.GET.get("kind") or "").strip()
    if kind:
        qs = qs.filter(kind=kind)
    return render(request, "dashboard/alerts/list.html", {
        "page": _page(request, qs), "kind": kind, "kinds": [k for k, _ in Alert.KINDS],
        "channels": p.scope(AlertChannel.objects.select_related("tenant")),
        "can_create": p.can_edit_any,
    })


@login_required
def channel_edit(request, pk=None):
    p = get_principal(request)
    channel = _object_for_edit(p, AlertChannel.objects.select_related("tenant"), pk)
    form = forms.AlertChannelForm(request.POST or None, principal=p, instance=channel)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        obj = channel or AlertChannel()
        obj.tenant = data.get("tenant")
        obj.name = (data.get("name") or "").strip()
        obj.kind, obj.emails, obj.url, obj.enabled = data["kind"], data.get("emails") or [], \
            (data.get("url") or "").strip(), data.get("enabled", False)
        try:
            save_channel(Actor.from_request(request), obj, secret=data.get("secret") or None)
        except ValidationError as exc:
            form.apply_errors(exc)
        else:
            messages.success(request, f"Alert channel {obj.name} saved.")
            return redirect("dashboard:alerts")
    return render(request, "dashboard/alerts/channel_form.html", {"form": form, "channel": channel})


@login_required
@require_POST
def channel_delete(request, pk):
    p = get_principal(request)
    channel = p.get_or_404(AlertChannel.objects.select_related("tenant"), id=pk)
    _require_edit(p, channel.tenant_id)
    name = channel.name
    delete_channel(Actor.from_request(request), channel)
    messages.success(request, f"Alert channel {name} deleted.")
    return redirect("dashboard:alerts")


# =================================================================== tenants (staff) and members (owners)

@login_required
def tenant_list(request):
    p = get_principal(request)
    _staff_or_404(p)
    tenants = Tenant.objects.annotate(n_delegations=Count("delegations", distinct=True),
                                      n_members=Count("memberships", distinct=True)).order_by("slug")
    return render(request, "dashboard/tenants/list.html", {"tenants": tenants})


@login_required
def tenant_new(request):
    p = get_principal(request)
    _staff_or_404(p)
    form = forms.TenantForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            tenant = services.create_tenant(Actor.from_request(request), note=_note(request), **form.service_fields())
        except ValidationError as exc:
            form.apply_errors(exc)
        else:
            messages.success(request, f"Tenant {tenant.slug} created. Delegate it a hostname suffix next.")
            return redirect("dashboard:tenant", slug=tenant.slug)
    return render(request, "dashboard/tenants/form.html", {"form": form})


def _tenant_for(p, slug):
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None or not p.can_view(tenant):
        raise Http404("not found")
    return tenant


@login_required
def tenant_detail(request, slug):
    p = get_principal(request)
    tenant = _tenant_for(p, slug)
    form = forms.TenantForm(instance=tenant) if p.staff else None
    issued = request.session.pop("issued_token", None)
    return render(request, "dashboard/tenants/detail.html", {
        "tenant": tenant, "form": form, "delegation_form": forms.DelegationForm(),
        "delegations": tenant.delegations.all(),
        "members": tenant.memberships.select_related("user").order_by("user__username"),
        "tokens": tenant.api_tokens.select_related("user").order_by("-created"),
        "member_form": forms.MemberForm(), "token_form": forms.TokenForm(),
        "can_manage": p.can_manage(tenant), "staff": p.staff, "issued": issued,
        "usage": {"routes": Route.objects.filter(tenant=tenant).count(),
                  "pools": Pool.objects.filter(tenant=tenant).count(),
                  "targets": Target.objects.filter(pool__tenant=tenant).count(),
                  "certificates": Certificate.objects.filter(tenant=tenant).count()},
    })


@login_required
@require_POST
def tenant_update(request, slug):
    p = get_principal(request)
    tenant = _tenant_for(p, slug)
    _require_staff(p)
    form = forms.TenantForm(request.POST, instance=tenant)
    if form.is_valid():
        try:
            services.update_tenant(Actor.from_request(request), Tenant.objects.get(pk=tenant.pk),
                                   note=_note(request), **form.service_fields())
        except ValidationError as exc:
            form.apply_errors(exc)
        else:
            messages.success(request, f"Tenant {tenant.slug} saved.")
            return redirect("dashboard:tenant", slug=tenant.slug)
    return render(request, "dashboard/tenants/form.html", {"form": form, "tenant": tenant})


@login_required
@require_POST
def tenant_delete(request, slug):
    p = get_principal(request)
    tenant = _tenant_for(p, slug)
    _require_staff(p)
    try:
        services.delete_tenant(Actor.from_request(request), tenant, note=_note(request))
    except ValidationError as exc:
        for ms in exc.message_dict.values():
            for m in ms:
                messages.error(request, m)
        return redirect("dashboard:tenant", slug=slug)
    messages.success(request, f"Tenant {slug} deleted.")
    return redirect("dashboard:tenants")


@login_required
@require_POST
def delegation_add(request, slug):
    p = get_principal(request)
    tenant = _tenant_for(p, slug)
    _require_staff(p)
    form = forms.DelegationForm(request.POST)
    if form.is_valid():
        try:
            services.create_delegation(Actor.from_request(request), tenant, form.cleaned_data.get("suffix") or "",
                                       note=_note(request))
        except ValidationError as exc:
            for field, ms in exc.message_dict.items():
                for m in ms:
                    messages.error(request, f"{field}: {m}")
        else:
            messages.success(request, f"Delegated {form.cleaned_data.get('suffix')} to {slug}.")
    return redirect("dashboard:tenant", slug=slug)


@login_required
@require_POST
def delegation_delete(request, pk):
    p = get_principal(request)
    _staff_or_404(p)
    delegation = Delegation.objects.filter(pk=pk).select_related("tenant").first()
    if delegation is None:
        raise Http404("not found")
    try:
        services.delete_delegation(Actor.from_request(request), delegation, note=_note(request))
    except ValidationError as exc:
        for ms in exc.message_dict.values():
            for m in ms:
                messages.error(request, m)
    else:
        messages.success(request, f"Delegation {delegation.suffix} removed.")
    return redirect("dashboard:tenant", slug=delegation.tenant.slug)


def _require_manage(p, tenant):
    if not p.can_manage(tenant):
        raise PermissionDenied("only the tenant's owners manage members and tokens")


@login_required
@require_POST
def member_add(request, slug):
    p = get_principal(request)
    tenant = _tenant_for(p, slug)
    _require_manage(p, tenant)
    form = forms.MemberForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give a username and a role.")
        return redirect("dashboard:tenant", slug=slug)
    User = get_user_model()
    user = User.objects.filter(**{User.USERNAME_FIELD: form.cleaned_data["username"]}).first()
    if user is None:
        messages.error(request, f"username: there is no user named {form.cleaned_data['username']}")
        return redirect("dashboard:tenant", slug=slug)
    with transaction.atomic():
        member, created = Membership.objects.get_or_create(user=user, tenant=tenant,
                                                           defaults={"role": form.cleaned_data["role"]})
        before = None if created else {"role": member.role}
        if not created:
            member.role = form.cleaned_data["role"]
            member.save(update_fields=["role"])
        record(Actor.from_request(request), "member", member, before, {"user": user.pk, "role": member.role},
               tenant=tenant, note=_note(request))
    messages.success(request, f"{user} is {member.role} of {slug}.")
    return redirect("dashboard:tenant", slug=slug)


@login_required
@require_POST
def member_remove(request, slug, pk):
    p = get_principal(request)
    tenant = _tenant_for(p, slug)
    _require_manage(p, tenant)
    member = Membership.objects.filter(tenant=tenant, pk=pk).select_related("user").first()
    if member is None:
        raise Http404("not found")
    with transaction.atomic():
        record(Actor.from_request(request), "remove", member, {"user": member.user_id, "role": member.role}, None,
               tenant=tenant, note=_note(request))
        member.delete()
    messages.success(request, f"{member.user} is no longer a member of {slug}.")
    return redirect("dashboard:tenant", slug=slug)


@login_required
@require_POST
def token_issue(request, slug):
    p = get_principal(request)
    tenant = _tenant_for(p, slug)
    _require_manage(p, tenant)
    form = forms.TokenForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a role for the token.")
        return redirect("dashboard:tenant", slug=slug)
    user = request.user
    role = form.cleaned_data["role"]
    with transaction.atomic():
        if not p.staff and not Membership.objects.filter(user=user, tenant=tenant).exists():
            raise PermissionDenied("not a member")
        row, plain = ApiToken.issue(user, tenant=tenant, role=role, name=form.cleaned_data.get("name") or "")
        record(Actor.from_request(request), "issue", row, after={"user": user.pk, "role": role}, tenant=tenant)
    request.session["issued_token"] = {"prefix": row.prefix, "token": plain}
    return redirect("dashboard:tenant", slug=slug)


@login_required
@require_POST
def token_revoke(request, slug, pk):
    p = get_principal(request)
    tenant = _tenant_for(p, slug)
    _require_manage(p, tenant)
    token = ApiToken.objects.filter(tenant=tenant, pk=pk).first()
    if token is None:
        raise Http404("not found")
    if token.revoked is None:
        with transaction.atomic():
            token.revoked = timezone.now()
            token.save(update_fields=["revoked"])
            record(Actor.from_request(request), "revoke", token, tenant=tenant)
    messages.success(request, f"Token {token.prefix}… revoked.")
    return redirect("dashboard:tenant", slug=slug)


# =================================================================== JSON for live charts

@login_required
def traffic_json(request):
    from django.http import JsonResponse
    p = get_principal(request)
    return JsonResponse({"traffic": telemetry.overview(p), "routes": telemetry.per_route(p)}, safe=False,
                        json_dumps_params={"default": str})


def json_script_default(value):
    return json.dumps(value, default=str)
