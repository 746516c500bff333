"""Whether a channel's addresses can be used: e-mail addresses, and webhook URLs under
the upstream address policy. Pure checks, shared by the model and by delivery."""
from __future__ import annotations

import urllib.parse

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from controlplane.tenancy import upstream_policy


def email_problems(emails) -> list[str]:
    """Problems with a channel's e-mail addresses: a non-empty list of valid addresses."""
    if not isinstance(emails, list) or not emails:
        return ["give at least one address (a list)"]
    problems = []
    for address in emails:
        try:
            validate_email(address)
        except (ValidationError, TypeError):
            problems.append(f"{address!r} is not an e-mail address")
    return problems


def url_problems(url: str, tenant=None) -> list[str]:
    """Problems with a webhook URL: http/https only, and for a tenant's channel the
    upstream address policy (no loopback, private, link-local ... addresses unless
    the platform allows that network for the tenant)."""
    try:
        parts = urllib.parse.urlsplit(url or "")
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return [f"is not a valid URL: {exc}"]
    if parts.scheme not in ("http", "https"):
        return ["must be an http:// or https:// URL"]
    if not parts.hostname:
        return ["has no host"]
    if parts.username or parts.password:
        return ["must not carry credentials; use the channel secret to authenticate"]
    if tenant is None:
        return []
    return upstream_policy.check_target(parts.hostname, tenant.allowed_networks or ())
