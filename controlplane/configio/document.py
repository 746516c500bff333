"""The configuration file: its sections, fields and defaults, its shape checks, its bytes.

One mapping, in YAML or JSON::

    switchyard: 1        # the format version
    tenant: shop         # only in a tenant's file: every object in it belongs to shop
    tenants: [...]       # slug, name, quotas, allowed_networks, delegations (suffixes)
    certificates: [...]  # tenant, name, certificate_pem, private_key_pem (encrypted), details
    access_lists: [...]  # tenant, name, rules (ordered [{action, cidr}]), default
    pools: [...]         # tenant, name, settings, health_check, targets
    routes: [...]        # tenant, name, match and behaviour, pool, certificate
    alert_channels: [...]

Objects refer to each other by name, never by database id: a tenant by slug (``null``
is the platform), a route's ``pool`` and ``certificate`` by name within the route's
owner (its ``access_list`` too). A field left out takes its default, so every object is described completely;
a section left out is not managed by the file (apply neither changes nor prunes it).
Business rules are not checked here but by the services that store each object.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import yaml

from controlplane.alerts.models import AlertChannel
from controlplane.proxy.models import AccessList, Pool, Route, Target
from controlplane.tenancy.models import Tenant

FORMAT = 1
SECTIONS = ("tenants", "certificates", "access_lists", "pools", "routes", "alert_channels")
NOUNS = {"tenants": "tenant", "certificates": "certificate", "pools": "pool", "routes": "route",
         "alert_channels": "alert channel", "access_lists": "access list"}
FORMATS = ("yaml", "json")

QUOTAS = ("routes", "pools", "targets", "certificates")  # quotas.<name> is Tenant.max_<name>
HEALTH_CHECK = {"enabled": "health_check_enabled", "type": "health_check_type", "path": "health_check_path",
                "method": "health_check_method", "expected_statuses": "health_check_expected_statuses",
                "host": "health_check_host", "interval": "health_check_interval",
                "timeout": "health_check_timeout", "healthy_threshold": "healthy_threshold",
                "unhealthy_threshold": "unhealthy_threshold"}
NOT_SETTINGS = ("id", "tenant", "name", "created", "updated")


def _with_new_fields(model, named: tuple, *handled: str) -> tuple:
    """``named`` and then the model's other plain settings (editable, not a relation),
    so that a setting added to the model later is exported and applied as it is, never
    silently lost in a round trip; ``handled``: fields the file carries otherwise."""
    skip = {*named, *handled, *NOT_SETTINGS}
    return named + tuple(f.name for f in model._meta.concrete_fields
                         if f.editable and not f.is_relation and not f.primary_key and f.name not in skip)


POOL_FIELDS = _with_new_fields(
    Pool, ("algorithm", "hash_on", "hash_key", "sticky_cookie", "connect_timeout", "read_timeout", "retries",
           "passive_failures", "passive_ejection_seconds", "tls_enabled", "tls_verify", "tls_ca_pem", "tls_sni"),
    *HEALTH_CHECK.values())
ROUTE_FIELDS = _with_new_fields(
    Route, ("hosts", "path", "path_type", "methods", "headers", "priority", "strip_prefix", "preserve_host",
            "request_headers", "response_headers", "websocket", "https_redirect", "hsts_max_age",
            "max_body_size", "forwarded", "acme", "enabled"))
CHANNEL_FIELDS = _with_new_fields(AlertChannel, ("emails", "url", "enabled"), "kind")
# Parsed from certificate_pem: exported for people to read, ignored on apply.
CERTIFICATE_DETAILS = ("source", "subject", "issuer", "sans", "not_before", "not_after", "fingerprint")
# Write-only: never exported in plain text, compared without showing them.
SECRET_FIELDS = ("secret", "private_key_pem")


@dataclass(frozen=True)
class Required:
    type: type


@dataclass(frozen=True)
class Optional:
    """May be left out (and then stays out); ``type`` when given."""
    type: type | None = None


@dataclass(frozen=True)
class Nested:
    spec: dict


@dataclass(frozen=True)
class ListOf:
    spec: dict


@dataclass(frozen=True)
class NullOr:
    """null (the default when left out) or a value of ``type``, e.g. a route's
    ``forward_auth`` object; its content is checked by the services."""
    type: type


DETAIL = Optional()


def _defaults(model, names, rename=None) -> dict:
    rename = rename or {}
    return {name: model._meta.get_field(rename.get(name, name)).get_default() for name in names}


SPECS: dict[str, dict] = {
    "tenants": {
        "slug": Required(str), "name": Required(str),
        "quotas": Nested(_defaults(Tenant, QUOTAS, {q: f"max_{q}" for q in QUOTAS})),
        "allowed_networks": [], "delegations": [],
        "rate_limit": NullOr(dict),  # {rate, burst, key, header} over all the tenant's routes, or null
    },
    "certificates": {
        "tenant": None, "name": Required(str), "certificate_pem": Required(str), "private_key_pem": Optional(str),
        **{name: DETAIL for name in CERTIFICATE_DETAILS},
    },
    "pools": {
        "tenant": None, "name": Required(str), **_defaults(Pool, POOL_FIELDS),
        "health_check": Nested(_defaults(Pool, HEALTH_CHECK, HEALTH_CHECK)),
        "targets": ListOf({"host": Required(str), "port": Required(int),
                           **_defaults(Target, ("weight", "state"))}),
    },
    "routes": {
        "tenant": None, "name": Required(str), **_defaults(Route, ROUTE_FIELDS), "pool": Required(str),
        "certificate": None, "access_list": None,
        "forward_auth": NullOr(dict),  # {url, response_headers, timeout} or null
        "rate_limit": NullOr(dict),  # {rate, burst, key, header} or null
        "basic_auth": NullOr(dict),  # {realm, users: [{username, password_hash}]} (hashes only) or null
    },
    "access_lists": {
        "tenant": None, "name": Required(str), "rules": [], "default": AccessList._meta.get_field("default").default,
        # basic auth: password hashes only (a file never carries a password)
        "users": ListOf({"username": Required(str), "password_hash": Required(str)}),
        "satisfy": AccessList._meta.get_field("satisfy").default,
    },
    "alert_channels": {
        "tenant": None, "name": Required(str), "kind": Required(str), **_defaults(AlertChannel, CHANNEL_FIELDS),
        "secret": Optional(str),
    },
}


# ------------------------------------------------------------------ problems and entries

@dataclass(frozen=True)
class Problem:
    """One thing wrong with the file: where (``routes[3].hosts``), which object, what."""
    path: str
    object: str
    message: str

    def __str__(self) -> str:
        where = " ".join(part for part in (self.path, f"({self.object})" if self.object else "") if part)
        return f"{where}: {self.message}" if where else self.message

    def as_dict(self) -> dict:
        return {"path": self.path, "object": self.object, "message": self.message}


@dataclass
class Entry:
    """One object of the file, normalised (every field present), with where it stands."""
    section: str
    path: str
    item: dict
    valid: bool = True

    @property
    def key(self):
        return key(self.section, self.item)

    @property
    def label(self) -> str:
        return label(self.section, self.item)


@dataclass
class Document:
    tenant: str | None = None                                  # the file's own scope
    sections: dict[str, list[Entry]] = field(default_factory=dict)


def key(section: str, item: dict):
    """How objects are matched between the file and the database."""
    return item.get("slug") if section == "tenants" else (item.get("tenant"), item.get("name"))


def label(section: str, item: dict) -> str:
    """``route shop/api``, ``pool web`` (the platform's), ``tenant shop``."""
    noun = NOUNS[section]
    if section == "tenants":
        return f"{noun} {item.get('slug') or '(no slug)'}"
    owner, name = item.get("tenant"), item.get("name") or "(no name)"
    return f"{noun} {owner}/{name}" if owner else f"{noun} {name}"


# ------------------------------------------------------------------ reading

def load(text: str | bytes) -> tuple[dict | None, list[Problem]]:
    """The file's mapping (YAML, of which JSON is a subset)."""
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        return None, [Problem("", "", f"not valid YAML or JSON: {exc}")]
    if not isinstance(data, dict):
        return None, [Problem("", "", "must be a mapping with switchyard, tenants, pools, routes ...")]
    return data, []


def scope_of(data: dict) -> tuple[str | None, list[Problem]]:
    """The file's ``tenant`` (its scope) and problems with the top level."""
    problems = []
    unknown = sorted(str(k) for k in data if k not in ("switchyard", "tenant", *SECTIONS))
    if unknown:
        problems.append(Problem("", "", f"unknown section {', '.join(unknown)}; expected {', '.join(SECTIONS)}"))
    if data.get("switchyard", FORMAT) != FORMAT:
        problems.append(Problem("switchyard", "", f"format {data.get('switchyard')!r} is not supported "
                                                  f"(this version reads format {FORMAT})"))
    tenant = data.get("tenant")
    if tenant is not None and not isinstance(tenant, str):
        problems.append(Problem("tenant", "", "must be a tenant slug"))
        tenant = None
    return tenant, problems


def read(data: dict, default_tenant: str | None) -> tuple[Document, list[Problem]]:
    """Normalise every object of ``data``; objects without ``tenant`` get ``default_tenant``."""
    doc, problems = Document(tenant=data.get("tenant")), []
    for section in SECTIONS:
        if section not in data:
            continue
        raw = data[section] if data[section] is not None else []
        if not isinstance(raw, list):
            problems.append(Problem(section, "", "must be a list"))
            continue
        doc.sections[section] = _entries(section, raw, default_tenant, problems)
    return doc, problems


def _entries(section: str, raw: list, default_tenant: str | None, problems: list[Problem]) -> list[Entry]:
    entries, seen = [], {}
    for index, value in enumerate(raw):
        path = f"{section}[{index}]"
        if isinstance(value, dict) and section != "tenants" and "tenant" not in value:
            value = {"tenant": default_tenant, **value}
        found: list[Problem] = []
        item = _mapping(SPECS[section], value, path, found)
        if item is None:
            problems.extend(found)
            continue
        entry = Entry(section, path, item, valid=not found)
        problems.extend(Problem(p.path, entry.label, p.message) for p in found)
        if entry.key in seen:
            problems.append(Problem(path, entry.label, f"is listed twice (also at {seen[entry.key]})"))
            entry.valid = False
        seen.setdefault(entry.key, path)
        entries.append(entry)
    return entries


def _mapping(spec: dict, value, path: str, problems: list[Problem]) -> dict | None:
    if not isinstance(value, dict):
        problems.append(Problem(path, "", "must be a mapping"))
        return None
    for name in value:
        if name not in spec:
            problems.append(Problem(f"{path}.{name}", "", f"unknown field; expected one of {', '.join(spec)}"))
    out = {}
    for name, rule in spec.items():
        if name in value:
            out[name] = _value(rule, value[name], f"{path}.{name}", problems)
        elif isinstance(rule, Required):
            problems.append(Problem(f"{path}.{name}", "", "is required"))
            out[name] = None
        elif not isinstance(rule, Optional):
            out[name] = _default(rule)
    return out


def _default(rule):
    if isinstance(rule, NullOr):
        return None
    if isinstance(rule, Nested):
        return {name: _default(sub) for name, sub in rule.spec.items()}
    if isinstance(rule, ListOf):
        return []
    return json.loads(json.dumps(rule))  # a fresh copy of a list or dict default


TYPE_NAMES = {str: "text", int: "an integer", float: "a number", bool: "true or false", list: "a list",
              dict: "a mapping"}


def _value(rule, value, path: str, problems: list[Problem]):
    if isinstance(rule, NullOr):
        if value is not None and not isinstance(value, rule.type):
            problems.append(Problem(path, "", f"must be null or {TYPE_NAMES.get(rule.type, rule.type.__name__)}"))
        return value
    if isinstance(rule, Nested):
        return _mapping(rule.spec, value, path, problems)
    if isinstance(rule, ListOf):
        if not isinstance(value, list):
            problems.append(Problem(path, "", "must be a list"))
            return []
        return [_mapping(rule.spec, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    expected = rule.type if isinstance(rule, (Required, Optional)) else type(rule) if rule is not None else str
    if expected is None or (value is None and rule is None):
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        problems.append(Problem(path, "", f"must be {TYPE_NAMES.get(expected, expected.__name__)}"))
    elif isinstance(rule, Required) and expected is str and not value.strip():
        problems.append(Problem(path, "", "may not be empty"))
    return value


# ------------------------------------------------------------------ writing

class _Dumper(yaml.SafeDumper):
    """Multi-line text (PEM) as a literal block, so the file reads like the PEM."""


def _text(dumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def dump(data: dict, fmt: str = "yaml") -> str:
    """The same ``data`` always gives the same text (key order is the order built)."""
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=1000)
