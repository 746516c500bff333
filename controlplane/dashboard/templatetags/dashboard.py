import json

from django import template

from controlplane.certs import expiry
from controlplane.proxy.services import etag_of
from controlplane.tenancy.access import principal as get_principal

register = template.Library()


@register.filter
def pretty(value):
    """JSON, indented (for audit before/after and diff values)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=1, sort_keys=True, default=str)


@register.filter
def short(value, n=12):
    return (value or "")[: int(n)]


@register.filter
def days_left(when):
    """Whole days left (negative once expired): the same figure as the expiry alerts'."""
    return expiry.days_left(when) if when else None


@register.filter
def expires_in(when):
    """"10 days", "5 hours", "less than 2 hours" or "expired", as the expiry alerts say it."""
    return expiry.remaining_text(when) if when else ""


@register.filter
def owner(obj):
    tenant = getattr(obj, "tenant", None)
    return tenant.slug if tenant is not None else "platform"


@register.filter
def get(mapping, key):
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.simple_tag(takes_context=True)
def principal(context):
    request = context.get("request")
    return get_principal(request) if request is not None else None


@register.simple_tag(takes_context=True)
def managed_tenants(context):
    """Tenants whose team page the user may open (their own, for members)."""
    request = context.get("request")
    if request is None or not request.user.is_authenticated:
        return []
    return list(get_principal(request).tenants()[:10])


@register.simple_tag(takes_context=True)
def config_allowed(context) -> bool:
    """Whether the nav shows Config (platform staff and tenant owners)."""
    from controlplane.configio.scope import may_use_dashboard
    request = context.get("request")
    if request is None or not request.user.is_authenticated:
        return False
    return may_use_dashboard(get_principal(request))


@register.filter
def compact(value):
    """JSON on one line (lists of targets and header rules stay readable)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return "\n".join(json.dumps(v, sort_keys=True, default=str) for v in value)
    return json.dumps(value, sort_keys=True, default=str)


@register.filter
def etag(obj):
    """The version of ``obj`` a one-button form (delete, remove) acts on."""
    return etag_of(obj)
