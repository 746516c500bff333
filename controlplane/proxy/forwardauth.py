"""Forward auth on routes, the control plane's side: the stored form of a route's
``forward_auth`` and the tenant upstream policy on its URL.

``{"url": "https://auth.example.com/api/authz/forward-auth", "response_headers":
["Remote-User", "Remote-Groups"], "timeout": 5.0}`` or None. The syntax (URL, header
names, timeout range) is the snapshot schema's (``dataplane.schema._forward_auth``),
checked through ``validation._route_schema`` like every route field; here: the shape,
and for a tenant's route the same rule as its pools' targets (no loopback, private,
link-local or special address unless the platform allows that network, every address
a name resolves to, never the control plane or a node listener). The node checks the
addresses again on every connect (DNS rebinding).
"""
from __future__ import annotations

from typing import Any

from controlplane.tenancy import upstream_policy
from dataplane import schema

FIELD = "forward_auth"
KEYS = ("url", "response_headers", "timeout")
DEFAULT_TIMEOUT = 5.0
EXAMPLES = {  # documented endpoints of the auth services people run (README)
    "Authelia": "https://auth.example.com/api/authz/forward-auth",
    "Authelia (legacy)": "https://auth.example.com/api/verify?rd=https://auth.example.com/",
    "Authentik": "https://authentik.example.com/outpost.goauthentik.io/auth/traefik",
    "oauth2-proxy": "https://oauth2.example.com/oauth2/auth",
}


def normalize(value: Any, errors: Any) -> dict | None:
    """The stored form of ``value`` (None: no forward auth); problems go to ``errors``."""
    if value is None or value == {} or value == "":
        return None
    if not isinstance(value, dict):
        errors.add(FIELD, "must be an object with url, response_headers and timeout, or null")
        return value
    unknown = sorted(set(value) - set(KEYS))
    if unknown:
        errors.add(FIELD, f"unknown key(s) {', '.join(map(str, unknown))}; use {', '.join(KEYS)}")
    url = value.get("url")
    if isinstance(url, str):
        url = url.strip()
    names = value.get("response_headers", [])
    if names is None:
        names = []
    if isinstance(names, str):  # "Remote-User, Remote-Groups"
        names = [n.strip() for n in names.replace("\n", ",").split(",") if n.strip()]
    timeout = value.get("timeout", DEFAULT_TIMEOUT)
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    return {"url": url, "response_headers": names, "timeout": timeout}


def check(route: Any, errors: Any) -> None:
    """Normalises ``route.forward_auth`` in place and checks a tenant's URL against
    the tenant's upstream policy (the schema checks the rest, with the node's code)."""
    route.forward_auth = normalize(route.forward_auth, errors)
    fa = route.forward_auth
    if not isinstance(fa, dict) or not isinstance(fa.get("url"), str) or not route.tenant_id:
        return
    try:
        _, host, port, _ = schema.forward_auth_url(fa["url"])
    except ValueError:
        return  # the schema names it
    try:
        literal = upstream_policy.parse_ip_literal(host)
    except ValueError:
        return
    if literal is None:
        problems = upstream_policy.check_target(host, route.tenant.allowed_networks or [], port=port)
    elif upstream_policy.reserved_endpoints().forbids(str(literal), port):
        # the schema refuses forbidden address literals; the reserved listeners are the
        # control plane's setting, known here only
        problems = [f"{host}:{port} is the control plane or a proxy listener; no tenant may use it"]
    else:
        problems = []
    for problem in problems:
        errors.add(FIELD, f"url: {problem.replace('tenant targets', 'tenant forward auth')}")


# RFC 9209 types a node answers 503 with when the auth service could not be asked
FAILURE_TYPES = frozenset(("connection_refused", "connection_timeout", "http_response_timeout", "dns_error",
                           "destination_ip_prohibited", "destination_ip_unroutable", "connection_terminated",
                           "http_protocol_error", "tls_protocol_error", "tls_certificate_error"))


def diagnosis(fa: dict, kind: str) -> dict:
    """What a route's forward auth says about its errors of RFC 9209 type ``kind``
    ("why 4xx/5xx"): {} when it has nothing to do with them."""
    if not isinstance(fa, dict):
        return {}
    url, timeout = fa.get("url"), fa.get("timeout", DEFAULT_TIMEOUT)
    policy = {"policy": {"forward_auth": url, "timeout": timeout}}
    if kind == "http_request_denied":
        return {**policy, "check": (
            f"This route asks forward auth at {url} before forwarding: whatever it answers that is not "
            "2xx (a 302 to its login page, 401, 403) goes to the client as it is, and the tail's reason "
            "says forward_auth_denied. Look at the auth service's own log for why it refused; a login "
            "loop usually means its session cookie is not sent for this host (cookie domain).")}
    if kind in FAILURE_TYPES:
        return {**policy, "check": (
            f"This route asks forward auth at {url}; a 503 whose Proxy-Status details say \"forward auth\" "
            f"(tail reason forward_auth_{kind}) means the auth service could not be asked within "
            f"{timeout:g} s, and nothing was forwarded. Check that the auth service runs and is reachable "
            "from the nodes; other errors of this type come from the pool's targets.")}
    return {}


def describe(fa: dict | None) -> str:
    """One line for lists and audit notes."""
    if not fa:
        return "off"
    names = ", ".join(fa.get("response_headers") or []) or "no headers"
    return f"{fa.get('url')} (copies {names}; timeout {fa.get('timeout', DEFAULT_TIMEOUT):g} s)"
