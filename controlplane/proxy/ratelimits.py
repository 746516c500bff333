"""Rate limits as people read them: one line per limit, and what "why 4xx" says about a
route's 429s. The limits themselves are ``Route.rate_limit`` and ``Tenant.rate_limit``
(checked by ``validation.normalize_rate_limit``); how they hold across nodes:
dataplane/ratelimit.py and controlplane/publishing/ratelimits.py."""
from __future__ import annotations


def describe(value) -> str:
    """"100 requests/s, burst 20, per client address" (empty for no limit)."""
    if not isinstance(value, dict):
        return ""
    per = {"none": "all requests together", "client_ip": "per client address",
           "header": f"per {value.get('header') or 'header'} value"}.get(value.get("key"), "")
    rate = value.get("rate")
    rate_text = f"{rate:g}" if isinstance(rate, (int, float)) else str(rate)
    return f"{rate_text} requests/s, burst {value.get('burst')}, {per}"


def diagnosis(route) -> dict:
    """The "why 4xx" policy entry for a route's refusals when it has a rate limit (its own
    or its tenant's), else {}."""
    own = describe(route.rate_limit)
    tenant = describe(route.tenant.rate_limit) if route.tenant_id else ""
    if not own and not tenant:
        return {}
    limits = [f"this route: {own}"] if own else []
    if tenant:
        limits.append(f"tenant {route.tenant.slug}, all its routes together: {tenant}")
    return {"policy": {"rate_limit": route.rate_limit,
                       "tenant_rate_limit": route.tenant.rate_limit if route.tenant_id else None},
            "check": "Rate limits apply (" + "; ".join(limits) + "); over them the nodes answer 429 and the "
                     "tail's reason says \"rate limit\". Raise the rate or burst, or count per client address "
                     "or API key header so one client cannot use the whole limit."}
