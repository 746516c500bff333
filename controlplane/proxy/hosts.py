"""A proxy host in one step: host names and upstream URLs become a pool and a route,
created together as one change (one config version, one preview).

``create_proxy_host`` is what the dashboard's "New proxy host" form calls. It parses
the upstream URLs (``http://10.0.0.5:8080``; ``https://`` turns on TLS to the
upstream), then creates the pool and the route through the same services (and so the
same validation, upstream policy, delegations, quotas and node gate) as every other
change, inside one ``publisher.batch``: either both exist and one version is
published, or nothing is stored. Refusals come back as one ``ValidationError`` keyed
by this function's argument names (``hosts``, ``upstreams``, ``certificate``,
``acme``, ``https_redirect``, ``name``, ``tenant``).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction

from controlplane.audit.models import AuditEntry
from controlplane.publishing import publisher
from controlplane.publishing.models import ConfigVersion

from . import services, validation
from .models import Pool, Route
from .validation import Errors

SCHEMES = {"http": 80, "https": 443}

# Where a pool's or a route's refusal lands among this function's arguments.
POOL_FIELDS = {"targets": "upstreams", "name": "name", "tenant": "tenant"}
ROUTE_FIELDS = {"hosts": "hosts", "name": "name", "tenant": "tenant", "certificate": "certificate",
                "acme": "acme", "https_redirect": "https_redirect", "pool": "upstreams",
                "access_list": "access_list"}


@dataclass
class ProxyHost:
    route: Route
    pool: Pool
    version: ConfigVersion | None  # None when the config the nodes run did not change


def parse_upstream(url: str) -> tuple[str, str, int]:
    """``http://10.0.0.5:8080`` → (``http``, ``10.0.0.5``, 8080). A URL without a scheme is
    http; the port defaults to the scheme's. Raises ValueError with what to write."""
    text = (url or "").strip()
    if not text:
        raise ValueError("empty upstream URL")
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url}: not a URL ({exc}); write e.g. http://10.0.0.5:8080") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"{url}: only http:// and https:// upstreams are possible here")
    if not parts.hostname:
        raise ValueError(f"{url}: no host; write e.g. http://10.0.0.5:8080")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{url}: credentials in the URL are not supported")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{url}: a path is not supported here (the request path is forwarded as it is); "
                         "write only scheme://host:port")
    host = parts.hostname
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        pass
    return scheme, host, port or SCHEMES[scheme]


def _targets(upstreams, errors: Errors) -> tuple[list[dict], bool]:
    """(target dicts, TLS to the upstreams) from the URLs."""
    if isinstance(upstreams, str):
        upstreams = upstreams.split()
    targets, schemes = [], set()
    for url in upstreams or []:
        try:
            scheme, host, port = parse_upstream(url)
        except ValueError as exc:
            errors.add("upstreams", str(exc))
            continue
        schemes.add(scheme)
        targets.append({"host": host, "port": port, "weight": 1, "state": "enabled"})
    if not targets and "upstreams" not in errors:
        errors.add("upstreams", "needs at least one upstream URL, e.g. http://10.0.0.5:8080")
    if len(schemes) > 1:
        errors.add("upstreams", "mix of http:// and https://: a pool talks to all its targets the same way")
    return targets, schemes == {"https"}


def _hosts(hosts) -> list[str]:
    if isinstance(hosts, str):
        hosts = hosts.replace(",", " ").split()
    return [h.strip() for h in hosts or [] if isinstance(h, str) and h.strip()]


def _free_name(model, tenant, base: str) -> str:
    """``base``, or ``base-2``, ``base-3``… the first name the owner does not use yet."""
    taken = set(model.objects.filter(tenant=tenant, name__startswith=base).values_list("name", flat=True))
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def _merge(errors: Errors, exc: ValidationError, fields: dict[str, str], kind: str,
           skip: tuple[str, ...] = ()) -> None:
    """``exc``'s messages under this function's names; messages about other fields of the
    pool or route go above the form, naming the field."""
    if not hasattr(exc, "error_dict"):
        for message in exc.messages:
            errors.add(NON_FIELD_ERRORS, message)
        return
    for field, messages in exc.message_dict.items():
        if field in skip:
            continue
        target = fields.get(field)
        for message in messages:
            if target is not None:
                errors.add(target, message)
            elif field == NON_FIELD_ERRORS:
                errors.add(NON_FIELD_ERRORS, message)
            else:
                errors.add(NON_FIELD_ERRORS, f"{kind} {field}: {message}")


def create_proxy_host(actor, *, tenant=None, hosts, upstreams, certificate=None, acme: bool = False,
                      https_redirect: bool = False, websocket: bool = False, name: str = "",
                      note: str = "", access_list=None) -> ProxyHost:
    """Create a pool of ``upstreams`` (URLs) and a route for ``hosts`` to it, published as
    one version. ``certificate`` (an object or an id of the owner's) or ``acme`` (only
    where ACME is configured) give the hosts TLS; neither leaves the certificate to be
    chosen by hostname. ``name`` names both (default: the first host name).
    ``access_list`` (an object or an id of the owner's) decides who may reach the route."""
    owner = services._tenant(tenant)
    errors = Errors()
    host_list = _hosts(hosts)
    if not host_list:
        errors.add("hosts", "needs at least one host name, e.g. app.example.com")
    targets, upstream_tls = _targets(upstreams, errors)
    cert_id = getattr(certificate, "pk", certificate) or None
    if cert_id is not None:
        try:
            cert_id = int(cert_id)
        except (TypeError, ValueError):
            errors.add("certificate", f"unknown certificate {certificate}")
    acl_id = getattr(access_list, "pk", access_list) or None
    if acl_id is not None:
        try:
            acl_id = int(acl_id)
        except (TypeError, ValueError):
            errors.add("access_list", f"unknown access list {access_list}")
    if cert_id and acme:
        errors.add("certificate", "choose one: an uploaded certificate or an automatic one (ACME)")
    if acme and not settings.SWITCHYARD_ACME_DIRECTORY:
        errors.add("acme", "automatic certificates are off in this installation "
                           "(the operator has not set SWITCHYARD_ACME_DIRECTORY)")
    if https_redirect and not (cert_id or acme):
        errors.add("https_redirect", "needs a certificate: choose one under TLS, or leave the redirect off")
    base = (name or "").strip() or (host_list[0] if host_list else "")
    route_fields = dict(hosts=host_list, certificate=cert_id if "certificate" not in errors else None,
                        acme=bool(acme) and "acme" not in errors, https_redirect=bool(https_redirect),
                        websocket=bool(websocket), access_list=acl_id if "access_list" not in errors else None)
    with transaction.atomic():
        publisher.lock()
        first_entry = AuditEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0
        pool_name = base if name else _free_name(Pool, owner, base)
        route_name = base if name else _free_name(Route, owner, base)
        try:
            with publisher.batch(actor, note) as batch:
                pool = _create_pool(actor, owner, pool_name, targets, upstream_tls, note, errors)
                route = _create_route(actor, owner, route_name, pool, route_fields, note, errors)
                errors.raise_if_any()
        except ValidationError as exc:
            if errors.by_field:
                raise
            _merge(errors, exc, ROUTE_FIELDS, "route")  # the node's gate, on the whole config
            errors.raise_if_any()
            raise
        version = batch.version
        if version is not None:
            AuditEntry.objects.filter(id__gt=first_entry, config_version__isnull=True,
                                      object_type__in=("pool", "route")).update(config_version=version.number)
    return ProxyHost(route=route, pool=pool, version=version)


def _create_pool(actor, owner, name, targets, upstream_tls, note, errors: Errors) -> Pool | None:
    if "upstreams" in errors or not name:
        return None
    try:
        return services.create_pool(actor, tenant=owner, name=name, targets=targets, tls_enabled=upstream_tls,
                                    note=note)
    except ValidationError as exc:
        _merge(errors, exc, POOL_FIELDS, "pool")
        return None


def _create_route(actor, owner, name, pool, fields: dict, note, errors: Errors) -> Route | None:
    if not fields["hosts"]:
        return None  # already reported
    if pool is not None:
        try:
            return services.create_route(actor, tenant=owner, name=name, pool=pool, note=note, **fields)
        except ValidationError as exc:
            _merge(errors, exc, ROUTE_FIELDS, "route")
            return None
    # No pool (its upstreams were refused): still check the route, so that every field's
    # problem shows at once.
    route = Route(tenant=owner, name=name,
                  **{k: v for k, v in fields.items() if k not in ("certificate", "access_list")},
                  certificate_id=fields.get("certificate"), access_list_id=fields.get("access_list"))
    try:
        validation.validate_route(route)
    except ValidationError as exc:
        _merge(errors, exc, ROUTE_FIELDS, "route", skip=("pool",))
    return None


def acme_available() -> bool:
    """Whether the form may offer an automatic certificate."""
    return bool(settings.SWITCHYARD_ACME_DIRECTORY)


__all__ = ["ProxyHost", "create_proxy_host", "parse_upstream", "acme_available"]
