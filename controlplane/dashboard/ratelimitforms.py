"""The rate-limit fields of the route and tenant forms: four inputs, one ``rate_limit``
value for the services (``proxy.validation.normalize_rate_limit`` checks it and names
its errors ``rate_limit``, shown at the rate input through ``field_aliases``)."""
from __future__ import annotations

from django import forms

from controlplane.proxy.ratelimits import describe
from controlplane.publishing.ratelimits import fallback_since
from dataplane import schema

KEY_CHOICES = [("none", "all requests together"), ("client_ip", "each client address"),
               ("header", "each value of a request header")]


class RateLimitFields(forms.Form):
    rate_limit_rate = forms.FloatField(
        required=False, min_value=schema.MIN_RATE, max_value=schema.MAX_RATE, label="Rate limit (requests/s)",
        widget=forms.NumberInput(attrs={"step": "any", "min": "0", "inputmode": "decimal", "placeholder": "no limit"}),
        help_text="Requests per second over all nodes together; above it clients get 429 with Retry-After. "
                  "Empty: no limit.")
    rate_limit_burst = forms.IntegerField(
        required=False, min_value=1, max_value=schema.MAX_BURST, label="Burst",
        widget=forms.NumberInput(attrs={"min": "1", "inputmode": "numeric", "placeholder": "one second"}),
        help_text="Requests admitted at once above the rate; empty: one second of the rate.")
    rate_limit_key = forms.ChoiceField(choices=KEY_CHOICES, required=False, initial="none", label="Counted for",
                                       help_text="Each client address as the node determines it (trusted proxies "
                                                 "included), or each value of a header such as an API key.")
    rate_limit_header = forms.CharField(
        required=False, max_length=100, label="Header counted",
        widget=forms.TextInput(attrs={"placeholder": "X-Api-Key", "spellcheck": "false", "autocomplete": "off"}),
        help_text="Only with “each value of a request header”; requests without it share one count.")

    def rate_limit_value(self) -> dict | None:
        data = self.cleaned_data
        rate = data.get("rate_limit_rate")
        if rate is None:
            return None
        value = {"rate": rate, "key": data.get("rate_limit_key") or "none",
                 "header": (data.get("rate_limit_header") or "").strip()}
        if data.get("rate_limit_burst") is not None:
            value["burst"] = data["rate_limit_burst"]
        if value["key"] != "header":
            value["header"] = ""
        return value


def rate_limit_initial(value) -> dict:
    value = value if isinstance(value, dict) else {}
    return {"rate_limit_rate": value.get("rate"), "rate_limit_burst": value.get("burst"),
            "rate_limit_key": value.get("key") or "none", "rate_limit_header": value.get("header") or ""}


def route_rate_limits(route) -> dict:
    """What the route page says about rate limits: the route's own, its tenant's, and,
    when either exists and a connected node runs on fallback shares, since when."""
    own = describe(route.rate_limit)
    tenant = describe(route.tenant.rate_limit) if route.tenant_id else ""
    fallback = None
    if own or tenant:
        since = fallback_since().values()
        fallback = min(since) if since else None
    return {"own": own, "tenant": tenant, "fallback": fallback}
