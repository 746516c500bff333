"""Which ACME challenge an order of a route uses: the route's own choice
(``acme_challenge``), else DNS-01 for a route with a wildcard host when the operator
configured a DNS server, else the installation's default (``SWITCHYARD_ACME_CHALLENGE``).
Read by the route validation and by the orders, so both agree."""
from __future__ import annotations

import re

from django.conf import settings

HTTP_01, TLS_ALPN_01, DNS_01 = "http-01", "tls-alpn-01", "dns-01"
METHODS = (HTTP_01, TLS_ALPN_01, DNS_01)
PROFILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def dns_configured() -> bool:
    return bool(settings.SWITCHYARD_ACME_DNS_SERVER.strip() and settings.SWITCHYARD_ACME_DNS_ZONE.strip())


def default_method() -> str:
    chosen = (settings.SWITCHYARD_ACME_CHALLENGE or "").strip().lower()
    return chosen if chosen in METHODS else HTTP_01


def method(hosts, chosen: str = "") -> str:
    if chosen:
        return chosen
    if any(str(h).startswith("*.") for h in hosts or []) and dns_configured():
        return DNS_01
    return default_method()


def profile(chosen: str = "") -> str:
    return chosen or settings.SWITCHYARD_ACME_PROFILE
