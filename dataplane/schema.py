"""The config snapshot and the sync messages: the one contract between planes.

Pure Python: the standard library, ``dataplane.wire`` (what may go on the wire) and
``dataplane.router.PathRegex`` (route regexes, RE2). The control plane validates every
snapshot with ``parse_snapshot`` (and ``dataplane.applier.check_snapshot``) before it
becomes a version; the data plane runs the same function before applying one. A
snapshot is a plain JSON object; this module turns it into frozen dataclasses or a
list of ``SchemaError`` naming the path.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

from dataplane import errorpages, wire
from dataplane.router import PathRegex

SCHEMA_VERSION = 1

ALGORITHMS = ("round_robin", "least_conn", "random", "consistent_hash")
HASH_ON = ("client_ip", "header", "cookie")
HASH_KEY_CHECKS = {"header": wire.header_name, "cookie": wire.cookie_name}
PATH_TYPES = ("prefix", "exact", "regex")
TARGET_STATES = ("enabled", "disabled", "draining")
CHECK_TYPES = ("http", "tcp")
ACCESS_ACTIONS = ("allow", "deny")
RATE_LIMIT_KEYS = ("none", "client_ip", "header")  # what a rate limit counts separately
MIN_RATE, MAX_RATE, MAX_BURST = 0.001, 1_000_000.0, 1_000_000
# An access list's name goes into the Proxy-Status details of its 403 (a quoted string)
ACCESS_LIST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}")
MAX_ACCESS_RULES = 1000
# Basic auth on an access list: users with PBKDF2-HMAC-SHA256 hashes only (never a
# password): "pbkdf2_sha256$<iterations>$<base64 salt>$<base64 32-byte digest>".
SATISFY = ("all", "any")  # an access list with users: rules and a password, or either
PASSWORD_HASH_ALGORITHM = "pbkdf2_sha256"
MIN_HASH_ITERATIONS, MAX_HASH_ITERATIONS = 100_000, 1_000_000
MIN_SALT_BYTES, MAX_SALT_BYTES, HASH_BYTES = 16, 64, 32
MAX_BASIC_AUTH_USERS = 100
BASIC_AUTH_USERNAME = re.compile(r"[^\s:\x00-\x1f\x7f]{1,64}")  # no colon: "user:password"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")

# Headers a header rule may never touch: framing and client identity.
PROTECTED_HEADERS = frozenset(
    h.lower()
    for h in (
        "Content-Length", "Transfer-Encoding", "Connection", "Host", "Forwarded",
        "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade", "Via",
        "X-Real-IP", "X-Request-ID",
    )
)
PROTECTED_PREFIXES = ("x-forwarded-",)

# ACME: tokens and account-key thumbprints are base64url; a TLS-ALPN-01 certificate
# carries the acmeIdentifier extension (OID 1.3.6.1.5.5.7.1.31, here DER-encoded).
ACME_BASE64URL = re.compile(r"[A-Za-z0-9_-]{1,256}")
ACME_IDENTIFIER_OID = bytes.fromhex("06082b0601050507011f")
PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----")
PEM_PRIVATE_KEY = re.compile(r"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----")

# Used by controlplane.diagnostics for synthetic request headers; the snapshot's own
# strings are checked by dataplane.wire.
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
FORBIDDEN_VALUE_CHARS = re.compile(r"[\r\n\x00]")


@dataclass(frozen=True)
class SchemaError:
    path: str
    message: str

    def as_dict(self) -> dict:
        return {"path": self.path, "message": self.message}


class SnapshotInvalid(ValueError):
    def __init__(self, errors: list[SchemaError]):
        self.errors = errors
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors[:5]))


@dataclass(frozen=True)
class HealthCheck:
    type: str = "http"
    path: str = "/"
    method: str = "GET"
    expected_statuses: str = "200-399"
    host: str = ""
    interval: float = 5.0
    timeout: float = 2.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3


@dataclass(frozen=True)
class UpstreamTLS:
    enabled: bool = False
    verify: bool = True
    ca_pem: str = ""
    sni: str = ""


@dataclass(frozen=True)
class UpstreamPolicy:
    """Where a pool's targets may connect. ``restricted`` False = platform pool."""
    restricted: bool = False
    allowed_networks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    id: int
    host: str
    port: int
    weight: int = 1
    state: str = "enabled"


@dataclass(frozen=True)
class Pool:
    id: int
    name: str
    tenant: str | None
    targets: tuple[Target, ...]
    algorithm: str = "round_robin"
    hash_on: str = "client_ip"
    hash_key: str = ""
    sticky_cookie: str = ""
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    retries: int = 1
    passive_failures: int = 5            # consecutive failures that eject a target; 0: off
    passive_ejection_seconds: float = 30.0  # first ejection's length (doubles on repeats)
    tls: UpstreamTLS = field(default_factory=UpstreamTLS)
    health_check: HealthCheck | None = None
    policy: UpstreamPolicy = field(default_factory=UpstreamPolicy)


@dataclass(frozen=True)
class HeaderMatch:
    name: str
    value: str


@dataclass(frozen=True)
class HeaderRules:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    id: int
    name: str
    tenant: str | None
    hosts: tuple[str, ...]
    pool: int
    path: str = "/"
    path_type: str = "prefix"
    methods: tuple[str, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()
    priority: int = 0
    strip_prefix: bool = False
    preserve_host: bool = True
    request_headers: HeaderRules = field(default_factory=HeaderRules)
    response_headers: HeaderRules = field(default_factory=HeaderRules)
    websocket: bool = False
    https_redirect: bool = False
    hsts_max_age: int = 0
    max_body_size: int = 1024 * 1024
    forwarded: bool = False
    certificate: int | None = None
    access_list: int | None = None   # an access list of the route's own owner
    maintenance: bool = False        # answer 503 (Retry-After) without touching the pool
    retry_after: int = 0             # seconds in the maintenance answer's Retry-After; 0: none
    forward_authorization: bool = False  # basic auth: pass the client's Authorization upstream
    rate_limit: "RateLimit | None" = None  # this route's own limit (429 over it)
    forward_auth: "ForwardAuth | None" = None  # ask an auth service before forwarding
    error_pages: tuple[tuple[int, str], ...] = ()  # (status, HTML) by status (dataplane.errorpages)
    basic_auth: "RouteBasicAuth | None" = None  # the route's own users (after its access list's)


@dataclass(frozen=True)
class RouteBasicAuth:
    """Basic auth on a route: ``realm`` (the 401's and Proxy-Status details' text) and
    users with hashes only, as an access list's (dataplane.basicauth.BasicAuth)."""
    realm: str
    users: tuple["BasicAuthUser", ...]


@dataclass(frozen=True)
class ForwardAuth:
    """A route's forward auth (dataplane/forwardauth.py): GET ``url`` before forwarding;
    a 2xx forwards with ``response_headers`` copied from the answer, anything else is
    the client's answer. ``policy``: the route owner's upstream policy (restricted for a
    tenant's route, whatever the snapshot says)."""
    url: str
    response_headers: tuple[str, ...] = ()
    timeout: float = 5.0
    policy: UpstreamPolicy = field(default_factory=UpstreamPolicy)


@dataclass(frozen=True)
class RateLimit:
    """Requests per second with a burst, per client address, per value of a header, or
    for all requests together (``key`` "none"); held across nodes (dataplane/ratelimit.py)."""
    rate: float
    burst: int
    key: str = "none"   # RATE_LIMIT_KEYS
    header: str = ""    # the header whose value keys the limit when key == "header"


@dataclass(frozen=True)
class TenantRateLimit:
    """A tenant's limit over all its routes together."""
    tenant: str
    limit: RateLimit


@dataclass(frozen=True)
class AccessRule:
    action: str  # "allow" or "deny"
    cidr: str    # an IPv4 or IPv6 network (normalised: host bits cleared)


@dataclass(frozen=True)
class AccessList:
    """Ordered allow/deny rules on the client address: first match wins, then default."""
    id: int
    name: str
    tenant: str | None
    rules: tuple[AccessRule, ...] = ()
    default: str = "allow"
    users: tuple[BasicAuthUser, ...] = ()  # basic auth: a valid password is required too
    satisfy: str = "all"  # "any": a client the rules allow needs no password


@dataclass(frozen=True)
class BasicAuthUser:
    username: str
    password_hash: str  # PASSWORD_HASH_ALGORITHM format, checked by parse_password_hash


@dataclass(frozen=True)
class Certificate:
    """A TLS certificate. ``private_key_pem`` is never part of a stored version:
    the publisher fills it in on the wire (see ``key_ref``)."""
    id: int
    name: str
    tenant: str | None
    hosts: tuple[str, ...]
    certificate_pem: str
    fingerprint: str
    private_key_pem: str = ""


@dataclass(frozen=True)
class Http01Challenge:
    token: str
    key_authorization: str  # "<token>.<account key thumbprint>"


@dataclass(frozen=True)
class TlsAlpn01Challenge:
    host: str
    certificate_pem: str  # self-signed, with the acmeIdentifier extension
    private_key_pem: str


@dataclass(frozen=True)
class AcmeChallenges:
    http01: tuple[Http01Challenge, ...] = ()
    tls_alpn01: tuple[TlsAlpn01Challenge, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    routes: tuple[Route, ...]
    pools: tuple[Pool, ...]
    certificates: tuple[Certificate, ...] = ()
    acme_challenges: AcmeChallenges = field(default_factory=AcmeChallenges)
    schema: int = SCHEMA_VERSION
    access_lists: tuple[AccessList, ...] = ()
    tenant_rate_limits: tuple[TenantRateLimit, ...] = ()
    error_pages: tuple[tuple[int, str], ...] = ()  # the platform default pages (errorpages)


# ---------------------------------------------------------------- helpers

def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def snapshot_hash(data: dict) -> str:
    """sha256 of the canonical snapshot, ignoring the private keys added on the wire."""
    return hashlib.sha256(canonical_json(strip_secrets(data))).hexdigest()


def strip_secrets(data: dict) -> dict:
    data = _strip_challenge_keys(data)
    certs = data.get("certificates") or []
    if not any(isinstance(c, dict) and "private_key_pem" in c for c in certs):
        return data  # an empty key (certificate deleted since) is stripped too
    clean = dict(data)
    clean["certificates"] = [
        {k: v for k, v in c.items() if k != "private_key_pem"} if isinstance(c, dict) else c
        for c in certs
    ]
    return clean


def _strip_challenge_keys(data: dict) -> dict:
    """TLS-ALPN-01 validation keys are added on the wire too (not hashed, not stored)."""
    section = data.get("acme_challenges")
    alpn = section.get("tls_alpn01") if isinstance(section, dict) else None
    if not isinstance(alpn, list) or not any(isinstance(c, dict) and "private_key_pem" in c for c in alpn):
        return data
    return {**data, "acme_challenges": {**section, "tls_alpn01": [
        {k: v for k, v in c.items() if k != "private_key_pem"} if isinstance(c, dict) else c for c in alpn]}}


def normalize_host(host: str) -> str:
    """Lower case, no port, no trailing dot, IDNA to ASCII. Raises ValueError."""
    host = host.strip().lower()
    if host.startswith("["):
        raise ValueError("IP literals are not valid route hosts")
    if ":" in host:
        host = host.rsplit(":", 1)[0]
    host = host.rstrip(".")
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    if not name:
        raise ValueError("empty host name")
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"invalid host name {host!r}: {exc}") from None
    try:
        wire.hostname(name)
    except ValueError:
        raise ValueError(f"invalid host name {host!r}") from None
    return ("*." + name) if wildcard else name


# ---------------------------------------------------------------- parsing

class _Reader:
    """Collects errors while reading a JSON object; never raises on bad input."""

    def __init__(self) -> None:
        self.errors: list[SchemaError] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(SchemaError(path, message))

    def obj(self, value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            self.fail(path, "must be an object")
            return {}
        return value

    def list(self, value: Any, path: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, "must be a list")
            return []
        return value

    def int(self, d: dict, key: str, path: str, default: Any = ..., lo: int | None = None,
            hi: int | None = None) -> int:
        value = d.get(key, default)
        if value is ... :
            self.fail(f"{path}.{key}", "is required")
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{path}.{key}", "must be an integer")
            return 0
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.fail(f"{path}.{key}", f"must be between {lo} and {hi}")
        return value

    def num(self, d: dict, key: str, path: str, default: float, lo: float, hi: float) -> float:
        value = d.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"{path}.{key}", "must be a number")
            return default
        if not lo <= value <= hi:
            self.fail(f"{path}.{key}", f"must be between {lo} and {hi}")
        return float(value)

    def str(self, d: dict, key: str, path: str, default: Any = ..., max_len: int = 1024) -> str:
        value = d.get(key, default)
        if value is ...:
            self.fail(f"{path}.{key}", "is required")
            return ""
        if not isinstance(value, str):
            self.fail(f"{path}.{key}", "must be a string")
            return ""
        if len(value) > max_len:
            self.fail(f"{path}.{key}", f"is longer than {max_len} characters")
        return value

    def bool(self, d: dict, key: str, path: str, default: bool) -> bool:
        value = d.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{path}.{key}", "must be true or false")
            return default
        return value

    def choice(self, d: dict, key: str, path: str, choices: tuple, default: str) -> str:
        value = self.str(d, key, path, default)
        if value not in choices:
            self.fail(f"{path}.{key}", f"must be one of {', '.join(choices)}")
        return value

    def check(self, check, value: str, path: str) -> None:
        """Run ``check`` (a ``dataplane.wire`` function, ``PathRegex``) on ``value``;
        the ValueError it raises is recorded at ``path``."""
        try:
            check(value)
        except ValueError as exc:
            self.fail(path, str(exc))

    def opt_tenant(self, d: dict, path: str) -> str | None:
        value = d.get("tenant")
        if value is not None and not isinstance(value, str):
            self.fail(f"{path}.tenant", "must be a tenant slug or null")
            return None
        return value


def _header_name(r: _Reader, name: Any, path: str, rule: bool) -> str:
    try:
        wire.header_name(name)
    except ValueError as exc:
        r.fail(path, str(exc))
        return ""
    low = name.lower()
    if rule and (low in PROTECTED_HEADERS or low.startswith(PROTECTED_PREFIXES)):
        r.fail(path, f"header rules may not touch {name}")
    return name


def _header_value(r: _Reader, value: Any, path: str) -> str:
    if not isinstance(value, str):
        r.fail(path, "must be a string")
        return ""
    if len(value) > 4096:
        r.fail(path, "is longer than 4096 characters")
    else:
        r.check(wire.header_value, value, path)
    return value


def _header_rules(r: _Reader, value: Any, path: str) -> HeaderRules:
    d = r.obj(value if value is not None else {}, path)
    out: dict[str, Any] = {}
    for op in ("set", "add"):
        pairs = []
        for i, item in enumerate(r.list(d.get(op), f"{path}.{op}")):
            item = r.obj(item, f"{path}.{op}[{i}]")
            name = _header_name(r, item.get("name"), f"{path}.{op}[{i}].name", rule=True)
            pairs.append((name, _header_value(r, item.get("value"), f"{path}.{op}[{i}].value")))
        out[op] = tuple(pairs)
    out["remove"] = tuple(
        _header_name(r, n, f"{path}.remove[{i}]", rule=True)
        for i, n in enumerate(r.list(d.get("remove"), f"{path}.remove"))
    )
    return HeaderRules(**out)


def _health_check(r: _Reader, value: Any, path: str) -> HealthCheck | None:
    if value is None:
        return None
    d = r.obj(value, path)
    statuses = r.str(d, "expected_statuses", path, "200-399", 200)
    if not re.fullmatch(r"\d{3}(-\d{3})?(,\d{3}(-\d{3})?)*", statuses.replace(" ", "")):
        r.fail(f"{path}.expected_statuses", "must look like 200-399 or 200,204")
    check_path = r.str(d, "path", path, "/", 2048)
    r.check(wire.origin_form, check_path, f"{path}.path")
    host = r.str(d, "host", path, "", 261)
    if host:
        r.check(wire.host_header, host, f"{path}.host")
    return HealthCheck(
        type=r.choice(d, "type", path, CHECK_TYPES, "http"),
        path=check_path,
        method=r.choice(d, "method", path, ("GET", "HEAD", "OPTIONS"), "GET"),
        expected_statuses=statuses,
        host=host,
        interval=r.num(d, "interval", path, 5.0, 1.0, 3600.0),
        timeout=r.num(d, "timeout", path, 2.0, 0.1, 60.0),
        healthy_threshold=r.int(d, "healthy_threshold", path, 2, 1, 100),
        unhealthy_threshold=r.int(d, "unhealthy_threshold", path, 3, 1, 100),
    )


def _target(r: _Reader, value: Any, path: str) -> Target:
    d = r.obj(value, path)
    host = r.str(d, "host", path, max_len=253)
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            try:
                normalize_host(host)
            except ValueError as exc:
                r.fail(f"{path}.host", str(exc))
    return Target(
        id=r.int(d, "id", path),
        host=host,
        port=r.int(d, "port", path, lo=1, hi=65535),
        weight=r.int(d, "weight", path, 1, 0, 1000),
        state=r.choice(d, "state", path, TARGET_STATES, "enabled"),
    )


def _pool(r: _Reader, value: Any, path: str) -> Pool:
    d = r.obj(value, path)
    tls = r.obj(d.get("tls") or {}, f"{path}.tls")
    policy = r.obj(d.get("policy") or {}, f"{path}.policy")
    networks = []
    for i, net in enumerate(r.list(policy.get("allowed_networks"), f"{path}.policy.allowed_networks")):
        try:
            networks.append(str(ipaddress.ip_network(net, strict=False)))
        except (TypeError, ValueError):
            r.fail(f"{path}.policy.allowed_networks[{i}]", f"{net!r} is not a network")
    targets = tuple(_target(r, t, f"{path}.targets[{i}]")
                    for i, t in enumerate(r.list(d.get("targets"), f"{path}.targets")))
    hash_on = r.choice(d, "hash_on", path, HASH_ON, "client_ip")
    hash_key = r.str(d, "hash_key", path, "", 200)
    if hash_key and hash_on in HASH_KEY_CHECKS:
        r.check(HASH_KEY_CHECKS[hash_on], hash_key, f"{path}.hash_key")
    sticky_cookie = r.str(d, "sticky_cookie", path, "", 200)
    if sticky_cookie:
        r.check(wire.cookie_name, sticky_cookie, f"{path}.sticky_cookie")
    sni = r.str(tls, "sni", f"{path}.tls", "", 253)
    if sni:
        r.check(wire.server_name, sni, f"{path}.tls.sni")
    return Pool(
        id=r.int(d, "id", path),
        name=r.str(d, "name", path, max_len=200),
        tenant=r.opt_tenant(d, path),
        targets=targets,
        algorithm=r.choice(d, "algorithm", path, ALGORITHMS, "round_robin"),
        hash_on=hash_on,
        hash_key=hash_key,
        sticky_cookie=sticky_cookie,
        connect_timeout=r.num(d, "connect_timeout", path, 5.0, 0.05, 300.0),
        read_timeout=r.num(d, "read_timeout", path, 60.0, 0.05, 3600.0),
        retries=r.int(d, "retries", path, 1, 0, 10),
        passive_failures=r.int(d, "passive_failures", path, 5, 0, 1000),
        passive_ejection_seconds=r.num(d, "passive_ejection_seconds", path, 30.0, 1.0, 3600.0),
        tls=UpstreamTLS(
            enabled=r.bool(tls, "enabled", f"{path}.tls", False),
            verify=r.bool(tls, "verify", f"{path}.tls", True),
            ca_pem=r.str(tls, "ca_pem", f"{path}.tls", "", 1 << 20),
            sni=sni,
        ),
        health_check=_health_check(r, d.get("health_check"), f"{path}.health_check"),
        policy=UpstreamPolicy(
            restricted=r.bool(policy, "restricted", f"{path}.policy", False),
            allowed_networks=tuple(networks),
        ),
    )


def _route(r: _Reader, value: Any, path: str) -> Route:
    d = r.obj(value, path)
    hosts = []
    for i, h in enumerate(r.list(d.get("hosts"), f"{path}.hosts")):
        try:
            hosts.append(normalize_host(h) if isinstance(h, str) else normalize_host(""))
        except ValueError as exc:
            r.fail(f"{path}.hosts[{i}]", str(exc))
    if not hosts:
        r.fail(f"{path}.hosts", "needs at least one host")
    path_type = r.choice(d, "path_type", path, PATH_TYPES, "prefix")
    route_path = r.str(d, "path", path, "/", 2048)
    if path_type == "regex":
        r.check(PathRegex, route_path, f"{path}.path")
    elif not route_path.startswith("/") or re.search(r"[\s\x00-\x1f\x7f?#]", route_path):
        r.fail(f"{path}.path", "must start with / and contain no spaces, ? or #")
    methods = []
    for i, m in enumerate(r.list(d.get("methods"), f"{path}.methods")):
        if m not in METHODS:
            r.fail(f"{path}.methods[{i}]", f"{m!r} is not an HTTP method")
        else:
            methods.append(m)
    matches = []
    for i, m in enumerate(r.list(d.get("headers"), f"{path}.headers")):
        m = r.obj(m, f"{path}.headers[{i}]")
        matches.append(HeaderMatch(
            name=_header_name(r, m.get("name"), f"{path}.headers[{i}].name", rule=False),
            value=_header_value(r, m.get("value"), f"{path}.headers[{i}].value"),
        ))
    cert = d.get("certificate")
    if cert is not None and (isinstance(cert, bool) or not isinstance(cert, int)):
        r.fail(f"{path}.certificate", "must be a certificate id or null")
        cert = None
    return Route(
        id=r.int(d, "id", path),
        name=r.str(d, "name", path, max_len=200),
        tenant=r.opt_tenant(d, path),
        hosts=tuple(hosts),
        pool=r.int(d, "pool", path),
        path=route_path,
        path_type=path_type,
        methods=tuple(methods),
        headers=tuple(matches),
        priority=r.int(d, "priority", path, 0, -100000, 100000),
        strip_prefix=r.bool(d, "strip_prefix", path, False),
        preserve_host=r.bool(d, "preserve_host", path, True),
        request_headers=_header_rules(r, d.get("request_headers"), f"{path}.request_headers"),
        response_headers=_header_rules(r, d.get("response_headers"), f"{path}.response_headers"),
        websocket=r.bool(d, "websocket", path, False),
        https_redirect=r.bool(d, "https_redirect", path, False),
        hsts_max_age=r.int(d, "hsts_max_age", path, 0, 0, 10 * 365 * 86400),
        max_body_size=r.int(d, "max_body_size", path, 1024 * 1024, 0, 1 << 40),
        forwarded=r.bool(d, "forwarded", path, False),
        certificate=cert,
        access_list=_opt_id(r, d, "access_list", path, "an access list id"),
        maintenance=r.bool(d, "maintenance", path, False),
        retry_after=r.int(d, "retry_after", path, 0, 0, 7 * 86400),
        forward_authorization=r.bool(d, "forward_authorization", path, False),
        rate_limit=_rate_limit(r, d.get("rate_limit"), f"{path}.rate_limit"),
        forward_auth=_forward_auth(r, d.get("forward_auth"), f"{path}.forward_auth",
                                   d.get("tenant") is not None),
        error_pages=_error_pages(r, d.get("error_pages"), f"{path}.error_pages", errorpages.ROUTE_STATUSES),
        basic_auth=_route_basic_auth(r, d.get("basic_auth"), f"{path}.basic_auth", d.get("name")),
    )


MAX_REALM = 200


def _route_basic_auth(r: _Reader, value: Any, path: str, route_name: Any) -> RouteBasicAuth | None:
    """A route's basic auth or null: ``realm`` (default: the route's name; printable
    ASCII, it goes into WWW-Authenticate and Proxy-Status) and at least one user."""
    if value is None:
        return None
    d = r.obj(value, path)
    default = route_name if isinstance(route_name, str) else ""
    realm = r.str(d, "realm", path, default, MAX_REALM) or default  # "" as left out
    if not realm:
        r.fail(f"{path}.realm", "is required")
    elif len(realm) <= MAX_REALM:
        r.check(wire.sf_string, realm, f"{path}.realm")
    users = _basic_auth_users(r, d.get("users"), f"{path}.users")
    if d.get("users") in (None, []):
        r.fail(f"{path}.users", "needs at least one user (null turns basic auth off)")
    return RouteBasicAuth(realm, users)


def _rate_limit(r: _Reader, value: Any, path: str) -> RateLimit | None:
    """A rate limit object or null: rate > 0 (at most MAX_RATE), 1 <= burst, a key of
    RATE_LIMIT_KEYS; the header (an RFC 9110 token) is required for key "header"."""
    if value is None:
        return None
    d = r.obj(value, path)
    rate = r.num(d, "rate", path, 1.0, MIN_RATE, MAX_RATE)
    burst = r.int(d, "burst", path, 1, 1, MAX_BURST)
    key = r.choice(d, "key", path, RATE_LIMIT_KEYS, "none")
    header = r.str(d, "header", path, "", 100)
    if key == "header":
        r.check(wire.header_name, header, f"{path}.header")
    elif header:
        r.fail(f"{path}.header", "is only used with key \"header\"")
    return RateLimit(rate, burst, key, header.lower())


def _error_pages(r: _Reader, value: Any, path: str,
                 statuses: tuple = errorpages.STATUSES) -> tuple[tuple[int, str], ...]:
    """``{"503": "<html>…"}``: statuses, size, placeholders and UTF-8 checked by
    ``dataplane.errorpages.check_page`` (the control plane's check too)."""
    if value is None:
        return ()
    pages, problems = errorpages.check_pages(value, statuses)
    for key, message in problems:
        r.fail(f"{path}.{key}" if key else path, message)
    return tuple(sorted(pages.items()))


def _opt_id(r: _Reader, d: dict, key: str, path: str, what: str) -> int | None:
    value = d.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        r.fail(f"{path}.{key}", f"must be {what} or null")
        return None
    return value


FORWARD_AUTH_MAX_HEADERS = 32
FORWARD_AUTH_TIMEOUT = (0.1, 30.0)  # seconds; the default is 5


def forward_auth_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, target) of a forward-auth URL: http or https, a host name
    (IDNA applied) or an IP literal, an optional port, an origin-form path and query; no
    user info or fragment. Raises ValueError saying what is wrong."""
    from urllib.parse import urlsplit
    if not isinstance(url, str) or not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        raise ValueError("must be an ASCII URL without spaces or control characters")
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if u.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if u.username is not None or u.password is not None:
        raise ValueError("may not contain user info (user:password@)")
    if u.fragment or url.endswith("#"):
        raise ValueError("may not contain a fragment (#)")
    host = u.hostname or ""
    if not host:
        raise ValueError("needs a host")
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        wire.hostname(host)
    if port == 0:
        raise ValueError("port must be 1-65535")
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    wire.origin_form(target)
    return u.scheme, host.lower(), port or (443 if u.scheme == "https" else 80), target


def _policy_refuses(host: str, networks: tuple[str, ...]) -> str:
    """Why a restricted (tenant) owner may not ask ``host`` (an IP literal or a name), as
    far as the snapshot alone can tell; nodes check every resolved address on connect."""
    if host == "localhost" or host.endswith(".localhost"):
        return "is a loopback name"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return ""
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    for net in networks:
        net = ipaddress.ip_network(net, strict=False)
        if addr.version == net.version and addr in net:
            return ""
    if (addr.is_loopback or addr.is_private or addr.is_link_local or addr.is_unspecified
            or addr.is_multicast or addr.is_reserved):
        return "is an address the tenant's upstream policy forbids"
    return ""


def _forward_auth(r: _Reader, value: Any, path: str, restricted: bool) -> ForwardAuth | None:
    """A route's forward auth, or null; ``restricted``: the route belongs to a tenant."""
    if value is None:
        return None
    d = r.obj(value, path)
    url = r.str(d, "url", path, max_len=2048)
    host = ""
    try:
        host = forward_auth_url(url)[1]
    except ValueError as exc:
        r.fail(f"{path}.url", str(exc))
    names: list[str] = []
    items = r.list(d.get("response_headers"), f"{path}.response_headers")
    if len(items) > FORWARD_AUTH_MAX_HEADERS:
        r.fail(f"{path}.response_headers", f"at most {FORWARD_AUTH_MAX_HEADERS} header names")
        items = []
    for i, name in enumerate(items):
        name = _header_name(r, name, f"{path}.response_headers[{i}]", rule=False)
        low = name.lower()
        if name and (low in PROTECTED_HEADERS or low.startswith(PROTECTED_PREFIXES)):
            r.fail(f"{path}.response_headers[{i}]", f"forward auth may not set {name} (framing "
                                                    "and client identity headers are the proxy's)")
        elif name and low in (n.lower() for n in names):
            r.fail(f"{path}.response_headers[{i}]", f"{name} is listed twice")
        elif name:
            names.append(name)
    networks = []
    for i, net in enumerate(r.list(d.get("allowed_networks"), f"{path}.allowed_networks")):
        try:
            networks.append(str(ipaddress.ip_network(net, strict=False)))
        except (TypeError, ValueError):
            r.fail(f"{path}.allowed_networks[{i}]", f"{net!r} is not a network")
    if restricted and host:
        why = _policy_refuses(host, tuple(networks))
        if why:
            r.fail(f"{path}.url", f"{host} {why}; tenant routes may not ask it")
    return ForwardAuth(
        url=url,
        response_headers=tuple(names),
        timeout=r.num(d, "timeout", path, 5.0, *FORWARD_AUTH_TIMEOUT),
        policy=UpstreamPolicy(restricted=restricted, allowed_networks=tuple(networks)),
    )


def _access_list(r: _Reader, value: Any, path: str) -> AccessList:
    d = r.obj(value, path)
    name = r.str(d, "name", path, max_len=100)
    if isinstance(d.get("name"), str) and not ACCESS_LIST_NAME.fullmatch(name):
        r.fail(f"{path}.name", "use letters, digits, spaces, '.', '_' and '-' (at most 100, "
                               "starting with a letter or digit)")
    rules = []
    items = r.list(d.get("rules"), f"{path}.rules")
    if len(items) > MAX_ACCESS_RULES:
        r.fail(f"{path}.rules", f"at most {MAX_ACCESS_RULES} rules")
        items = []
    for i, item in enumerate(items):
        item = r.obj(item, f"{path}.rules[{i}]")
        action = r.choice(item, "action", f"{path}.rules[{i}]", ACCESS_ACTIONS, "deny")
        cidr = r.str(item, "cidr", f"{path}.rules[{i}]", max_len=64)
        try:
            cidr = str(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            r.fail(f"{path}.rules[{i}].cidr", f"{cidr!r} is not an IPv4 or IPv6 address or network")
        rules.append(AccessRule(action, cidr))
    return AccessList(
        id=r.int(d, "id", path),
        name=name,
        tenant=r.opt_tenant(d, path),
        rules=tuple(rules),
        default=r.choice(d, "default", path, ACCESS_ACTIONS, "allow"),
        users=_basic_auth_users(r, d.get("users"), f"{path}.users"),
        satisfy=r.choice(d, "satisfy", path, SATISFY, "all"),
    )


def parse_password_hash(text: str) -> tuple[int, bytes, bytes]:
    """(iterations, salt, digest) of a stored password hash; ValueError names what is wrong."""
    parts = text.split("$") if isinstance(text, str) else []
    if len(parts) != 4 or parts[0] != PASSWORD_HASH_ALGORITHM:
        raise ValueError(f"must be {PASSWORD_HASH_ALGORITHM}$<iterations>$<salt>$<hash>")
    if not parts[1].isdigit() or not MIN_HASH_ITERATIONS <= int(parts[1]) <= MAX_HASH_ITERATIONS:
        raise ValueError(f"iterations must be between {MIN_HASH_ITERATIONS} and {MAX_HASH_ITERATIONS}")
    try:
        salt = base64.b64decode(parts[2], validate=True)
        digest = base64.b64decode(parts[3], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("salt and hash must be base64") from None
    if not MIN_SALT_BYTES <= len(salt) <= MAX_SALT_BYTES:
        raise ValueError(f"the salt must be {MIN_SALT_BYTES} to {MAX_SALT_BYTES} bytes")
    if len(digest) != HASH_BYTES:
        raise ValueError(f"the hash must be {HASH_BYTES} bytes")
    return int(parts[1]), salt, digest


def _basic_auth_users(r: _Reader, value: Any, path: str) -> tuple[BasicAuthUser, ...]:
    items = r.list(value, path)
    if len(items) > MAX_BASIC_AUTH_USERS:
        r.fail(path, f"at most {MAX_BASIC_AUTH_USERS} users")
        return ()
    users, seen = [], set()
    for i, item in enumerate(items):
        item = r.obj(item, f"{path}[{i}]")
        username = r.str(item, "username", f"{path}[{i}]", max_len=64)
        if isinstance(item.get("username"), str) and not BASIC_AUTH_USERNAME.fullmatch(username):
            r.fail(f"{path}[{i}].username", "1 to 64 characters, no spaces, colons or control characters")
        elif username in seen:
            r.fail(f"{path}[{i}].username", f"duplicate user {username}")
        seen.add(username)
        password_hash = r.str(item, "password_hash", f"{path}[{i}]", max_len=300)
        r.check(parse_password_hash, password_hash, f"{path}[{i}].password_hash")
        users.append(BasicAuthUser(username, password_hash))
    return tuple(users)


def _certificate(r: _Reader, value: Any, path: str) -> Certificate:
    d = r.obj(value, path)
    pem = r.str(d, "certificate_pem", path, max_len=1 << 20)
    if pem and "-----BEGIN CERTIFICATE-----" not in pem:
        r.fail(f"{path}.certificate_pem", "is not a PEM certificate")
    hosts = []
    for i, h in enumerate(r.list(d.get("hosts"), f"{path}.hosts")):
        try:
            hosts.append(normalize_host(h if isinstance(h, str) else ""))
        except ValueError as exc:
            r.fail(f"{path}.hosts[{i}]", str(exc))
    return Certificate(
        id=r.int(d, "id", path),
        name=r.str(d, "name", path, max_len=200),
        tenant=r.opt_tenant(d, path),
        hosts=tuple(hosts),
        certificate_pem=pem,
        fingerprint=r.str(d, "fingerprint", path, max_len=128),
        private_key_pem=r.str(d, "private_key_pem", path, "", 1 << 20),
    )


def _http01(r: _Reader, value: Any, path: str, seen: set) -> Http01Challenge:
    d = r.obj(value, path)
    token = r.str(d, "token", path, max_len=256)
    if isinstance(d.get("token"), str) and ACME_BASE64URL.fullmatch(token) is None:
        r.fail(f"{path}.token", "must be base64url (A-Z, a-z, 0-9, - and _)")
    elif token in seen:
        r.fail(f"{path}.token", "duplicate token")
    seen.add(token)
    key_auth = r.str(d, "key_authorization", path, max_len=513)
    head, dot, thumbprint = key_auth.partition(".")
    well_formed = head == token and dot and ACME_BASE64URL.fullmatch(thumbprint) is not None
    if isinstance(d.get("key_authorization"), str) and not well_formed:
        r.fail(f"{path}.key_authorization",
               "must be the token, a dot and the base64url account key thumbprint")
    return Http01Challenge(token, key_auth)


def _acme_certificate(r: _Reader, pem: str, path: str) -> None:
    m = PEM_CERTIFICATE.search(pem)
    try:
        der = base64.b64decode("".join(m.group(1).split()), validate=True) if m else b""
    except (binascii.Error, ValueError):
        der = b""
    if not der:
        r.fail(path, "is not a PEM certificate")
    elif ACME_IDENTIFIER_OID not in der:
        r.fail(path, "has no acmeIdentifier extension")


def _tls_alpn01(r: _Reader, value: Any, path: str, seen: set) -> TlsAlpn01Challenge:
    d = r.obj(value, path)
    host = r.str(d, "host", path, max_len=253)
    if isinstance(d.get("host"), str):
        try:
            host = normalize_host(host)
        except ValueError as exc:
            r.fail(f"{path}.host", str(exc))
        if host.startswith("*."):
            r.fail(f"{path}.host", "TLS-ALPN-01 cannot validate a wildcard name")
        elif host in seen:
            r.fail(f"{path}.host", f"duplicate challenge for {host}")
        seen.add(host)
    pem = r.str(d, "certificate_pem", path, max_len=1 << 16)
    if isinstance(d.get("certificate_pem"), str):
        _acme_certificate(r, pem, f"{path}.certificate_pem")
    key = r.str(d, "private_key_pem", path, "", max_len=1 << 16)  # "": not on the wire (stored snapshots)
    if key and PEM_PRIVATE_KEY.search(key) is None:
        r.fail(f"{path}.private_key_pem", "is not an unencrypted PEM private key")
    return TlsAlpn01Challenge(host, pem, key)


def _acme_challenges(r: _Reader, value: Any, path: str) -> AcmeChallenges:
    d = r.obj(value if value is not None else {}, path)
    tokens: set = set()
    hosts: set = set()
    return AcmeChallenges(
        http01=tuple(_http01(r, c, f"{path}.http01[{i}]", tokens)
                     for i, c in enumerate(r.list(d.get("http01"), f"{path}.http01"))),
        tls_alpn01=tuple(_tls_alpn01(r, c, f"{path}.tls_alpn01[{i}]", hosts)
                         for i, c in enumerate(r.list(d.get("tls_alpn01"), f"{path}.tls_alpn01"))),
    )


def _cross_check(r: _Reader, snap: Snapshot) -> None:
    pools = {}
    for i, p in enumerate(snap.pools):
        if p.id in pools:
            r.fail(f"pools[{i}].id", f"duplicate pool id {p.id}")
        pools[p.id] = p
        if p.algorithm == "consistent_hash" and p.hash_on != "client_ip" and not p.hash_key:
            r.fail(f"pools[{i}].hash_key", f"is required to hash on a {p.hash_on}")
    cert_ids = {c.id for c in snap.certificates}
    access_lists = {}
    for i, a in enumerate(snap.access_lists):
        if a.id in access_lists:
            r.fail(f"access_lists[{i}].id", f"duplicate access list id {a.id}")
        access_lists[a.id] = a
    seen_ids: set[int] = set()
    seen_keys: dict[tuple, str] = {}
    for i, route in enumerate(snap.routes):
        if route.id in seen_ids:
            r.fail(f"routes[{i}].id", f"duplicate route id {route.id}")
        seen_ids.add(route.id)
        pool = pools.get(route.pool)
        if pool is None:
            r.fail(f"routes[{i}].pool", f"unknown pool {route.pool}")
        elif not pool.targets:
            r.fail(f"routes[{i}].pool", f"pool {pool.name!r} has no targets")
        if route.certificate is not None and route.certificate not in cert_ids:
            r.fail(f"routes[{i}].certificate", f"unknown certificate {route.certificate}")
        if route.access_list is not None:
            acl = access_lists.get(route.access_list)
            if acl is None:
                r.fail(f"routes[{i}].access_list", f"unknown access list {route.access_list}")
            elif acl.tenant != route.tenant:  # tenant isolation: only the owner's own lists
                r.fail(f"routes[{i}].access_list",
                       f"access list {acl.name!r} belongs to another owner than the route")
        match_key = (route.path, route.path_type, route.methods,
                     tuple(sorted((m.name.lower(), m.value) for m in route.headers)), route.priority)
        for host in route.hosts:
            other = seen_keys.get((host,) + match_key)
            if other is not None:
                r.fail(f"routes[{i}].hosts",
                       f"route {route.name!r} overlaps route {other!r} on {host}{route.path}")
            seen_keys[(host,) + match_key] = route.name


def parse_snapshot(data: Any) -> Snapshot:
    """Validate a snapshot JSON object. Raises ``SnapshotInvalid`` listing every problem."""
    r = _Reader()
    d = r.obj(data, "snapshot")
    schema = d.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        r.fail("schema", f"unsupported schema version {schema!r} (this node speaks {SCHEMA_VERSION})")
    snap = Snapshot(
        pools=tuple(_pool(r, p, f"pools[{i}]") for i, p in enumerate(r.list(d.get("pools"), "pools"))),
        routes=tuple(_route(r, x, f"routes[{i}]") for i, x in enumerate(r.list(d.get("routes"), "routes"))),
        certificates=tuple(_certificate(r, c, f"certificates[{i}]")
                           for i, c in enumerate(r.list(d.get("certificates"), "certificates"))),
        acme_challenges=_acme_challenges(r, d.get("acme_challenges"), "acme_challenges"),
        access_lists=tuple(_access_list(r, a, f"access_lists[{i}]")
                           for i, a in enumerate(r.list(d.get("access_lists"), "access_lists"))),
        tenant_rate_limits=_tenant_rate_limits(r, d.get("tenant_rate_limits")),
        error_pages=_error_pages(r, d.get("error_pages"), "error_pages"),
    )
    if not r.errors:
        _cross_check(r, snap)
    if r.errors:
        raise SnapshotInvalid(r.errors)
    return snap


def _tenant_rate_limits(r: _Reader, value: Any) -> tuple[TenantRateLimit, ...]:
    out: list[TenantRateLimit] = []
    seen: set[str] = set()
    for i, item in enumerate(r.list(value, "tenant_rate_limits")):
        path = f"tenant_rate_limits[{i}]"
        d = r.obj(item, path)
        tenant = r.str(d, "tenant", path, max_len=100)
        if tenant in seen:
            r.fail(f"{path}.tenant", f"duplicate tenant {tenant!r}")
        seen.add(tenant)
        limit = _rate_limit(r, d.get("limit"), f"{path}.limit")
        if limit is None:
            r.fail(f"{path}.limit", "is required")
        else:
            out.append(TenantRateLimit(tenant, limit))
    return tuple(out)


def empty_snapshot() -> dict:
    return {"schema": SCHEMA_VERSION, "pools": [], "routes": [], "certificates": []}


# ---------------------------------------------------------------- sync messages
#
# node -> control plane (JSON text frames):
#   {"type": "hello", "version": int|null, "hash": str|null, "software": str, "workers": int}
#   {"type": "heartbeat", "version": int|null, "hash": str|null}
#   {"type": "ack", "nonce": str, "version": int, "hash": str, "apply_ms": float}
#   {"type": "nack", "nonce": str, "version": int, "hash": str,
#    "running_version": int|null, "running_hash": str|null, "errors": [{"path", "message"}]}
#   {"type": "stats", ...}   traffic counters since the last report (see MSG_STATS below)
# control plane -> node:
#   push: a binary frame, zlib-compressed JSON
#         {"type": "push", "version": int, "hash": str, "nonce": str, "snapshot": {...}}
#   {"type": "health", "targets": {"<target id>": true|false}}   (text; state, not config)

MSG_HELLO = "hello"
MSG_HEARTBEAT = "heartbeat"
MSG_ACK = "ack"
MSG_NACK = "nack"
MSG_PUSH = "push"
MSG_HEALTH = "health"

HEARTBEAT_SECONDS = 10.0
MAX_PUSH_BYTES = 256 * 1024 * 1024  # decompressed push size a node accepts


def encode_push(version: int, digest: str, nonce: str, snapshot: dict) -> bytes:
    import zlib
    return zlib.compress(canonical_json({
        "type": MSG_PUSH, "version": version, "hash": digest, "nonce": nonce, "snapshot": snapshot,
    }), 6)


def decode_push(frame: bytes) -> dict:
    import zlib
    d = zlib.decompressobj()
    raw = d.decompress(frame, MAX_PUSH_BYTES)
    if d.unconsumed_tail:
        raise ValueError("push larger than MAX_PUSH_BYTES")
    msg = json.loads(raw)
    if not isinstance(msg, dict) or msg.get("type") != MSG_PUSH:
        raise ValueError("not a push message")
    return msg


# ---------------------------------------------------------------- traffic reports
#
# node -> control plane, every STATS_SECONDS while there was traffic:
#   {"type": "stats", "interval": float (seconds covered),
#    "routes": {"<route id>": {"requests": int,
#                              "by_status": {"2xx": int, ...},          (STATUS_CLASSES)
#                              "by_proxy_status": {"<type>": int, ...}, (RFC 9209 error types)
#                              "latency_buckets": [int] * STATS_BUCKET_SLOTS,
#                              "upstream_latency_buckets": [int] * STATS_BUCKET_SLOTS,
#                              "bytes_in": int, "bytes_out": int}},
#    "ejections": [{"target_id": int, "until": float (epoch seconds)}],
#    "failing": [{"target_id": int, "count": int, "code": str (a Proxy-Status type),
#                 "since": float (epoch seconds)}]}
# ``failing`` (optional) lists the targets whose last ``count`` (>= 3) connects all failed
# with ``code``, the run having started at ``since``; like ``ejections`` it is the
# node's current state, not a delta.
# Every number is a delta since the previous report of the same node process (never a
# running total). Histograms count observations per bucket (not cumulative): slot i
# holds values <= LATENCY_BUCKETS[i] and > the bound before; the last slot holds
# everything above the last bound. A node with many active routes splits one report
# into several messages of at most MAX_STATS_ROUTES routes.

MSG_STATS = "stats"
STATS_SECONDS = 10.0
# Upper bounds (seconds) of the latency histograms, shared by the node's Prometheus
# histograms and the control plane's percentile computation.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0)
STATS_BUCKET_SLOTS = len(LATENCY_BUCKETS) + 1
STATUS_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")
MAX_STATS_ROUTES = 1000
MAX_STATS_PROXY_STATUS = 32       # distinct Proxy-Status types per route and report
MAX_STATS_EJECTIONS = 1000
MAX_STATS_FAILING = 1000
MAX_STATS_COUNT = 1 << 53         # any counter in one report
MAX_STATS_INTERVAL = 7 * 86400.0
PROXY_STATUS_TYPE = re.compile(r"^[a-z0-9_\-]{1,64}$")


class StatsInvalid(ValueError):
    """A stats message that is not what this module describes; drop it whole."""


@dataclass(frozen=True)
class RouteTraffic:
    requests: int
    by_status: dict[str, int]
    by_proxy_status: dict[str, int]
    latency_buckets: tuple[int, ...]
    upstream_latency_buckets: tuple[int, ...]
    bytes_in: int
    bytes_out: int


@dataclass(frozen=True)
class Ejection:
    target_id: int
    until: float


@dataclass(frozen=True)
class FailureRun:
    target_id: int
    count: int
    code: str
    since: float


@dataclass(frozen=True)
class StatsReport:
    interval: float
    routes: dict[int, RouteTraffic]
    ejections: tuple[Ejection, ...]
    failing: tuple[FailureRun, ...] = ()


def _count(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_STATS_COUNT:
        raise StatsInvalid(f"{path}: must be an integer between 0 and 2**53")
    return value


def _counts(value: Any, path: str, keys: re.Pattern | tuple, limit: int) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > limit:
        raise StatsInvalid(f"{path}: must be an object of at most {limit} counters")
    out = {}
    for k, n in value.items():
        ok = k in keys if isinstance(keys, tuple) else isinstance(k, str) and keys.match(k)
        if not ok:
            raise StatsInvalid(f"{path}: unexpected key {str(k)[:40]!r}")
        n = _count(n, f"{path}.{k}")
        if n:
            out[k] = n
    return out


def _buckets(value: Any, path: str) -> tuple[int, ...]:
    if value is None:
        return (0,) * STATS_BUCKET_SLOTS
    if not isinstance(value, list) or len(value) != STATS_BUCKET_SLOTS:
        raise StatsInvalid(f"{path}: must be a list of {STATS_BUCKET_SLOTS} counts")
    return tuple(_count(n, f"{path}[{i}]") for i, n in enumerate(value))


def parse_stats(msg: Any) -> StatsReport:
    """Validate a stats message from a node (untrusted input): bounded sizes, integer
    counters only. Raises ``StatsInvalid`` naming the first problem."""
    if not isinstance(msg, dict) or msg.get("type") != MSG_STATS:
        raise StatsInvalid("not a stats message")
    interval = msg.get("interval", STATS_SECONDS)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) \
            or not 0 <= interval <= MAX_STATS_INTERVAL:
        raise StatsInvalid("interval: must be a number of seconds")
    routes_in = msg.get("routes")
    if routes_in is None:
        routes_in = {}
    if not isinstance(routes_in, dict) or len(routes_in) > MAX_STATS_ROUTES:
        raise StatsInvalid(f"routes: must be an object of at most {MAX_STATS_ROUTES} routes")
    routes: dict[int, RouteTraffic] = {}
    for key, r in routes_in.items():
        path = f"routes.{str(key)[:20]}"
        if not isinstance(key, str) or not key.isascii() or not key.isdigit() or len(key) > 18:
            raise StatsInvalid(f"{path}: route ids are decimal integers")
        if not isinstance(r, dict):
            raise StatsInvalid(f"{path}: must be an object")
        routes[int(key)] = RouteTraffic(
            requests=_count(r.get("requests", 0), f"{path}.requests"),
            by_status=_counts(r.get("by_status"), f"{path}.by_status", STATUS_CLASSES,
                              len(STATUS_CLASSES)),
            by_proxy_status=_counts(r.get("by_proxy_status"), f"{path}.by_proxy_status",
                                    PROXY_STATUS_TYPE, MAX_STATS_PROXY_STATUS),
            latency_buckets=_buckets(r.get("latency_buckets"), f"{path}.latency_buckets"),
            upstream_latency_buckets=_buckets(r.get("upstream_latency_buckets"),
                                              f"{path}.upstream_latency_buckets"),
            bytes_in=_count(r.get("bytes_in", 0), f"{path}.bytes_in"),
            bytes_out=_count(r.get("bytes_out", 0), f"{path}.bytes_out"),
        )
    ejections_in = msg.get("ejections")
    if ejections_in is None:
        ejections_in = []
    if not isinstance(ejections_in, list) or len(ejections_in) > MAX_STATS_EJECTIONS:
        raise StatsInvalid(f"ejections: must be a list of at most {MAX_STATS_EJECTIONS}")
    ejections = []
    for i, e in enumerate(ejections_in):
        if not isinstance(e, dict):
            raise StatsInvalid(f"ejections[{i}]: must be an object")
        until = e.get("until")
        if isinstance(until, bool) or not isinstance(until, (int, float)) or not 0 <= until < 1e11:
            raise StatsInvalid(f"ejections[{i}].until: must be epoch seconds")
        ejections.append(Ejection(_count(e.get("target_id"), f"ejections[{i}].target_id"),
                                  float(until)))
    failing_in = msg.get("failing")
    if failing_in is None:
        failing_in = []
    if not isinstance(failing_in, list) or len(failing_in) > MAX_STATS_FAILING:
        raise StatsInvalid(f"failing: must be a list of at most {MAX_STATS_FAILING}")
    failing = []
    for i, e in enumerate(failing_in):
        if not isinstance(e, dict):
            raise StatsInvalid(f"failing[{i}]: must be an object")
        since = e.get("since")
        if isinstance(since, bool) or not isinstance(since, (int, float)) or not 0 <= since < 1e11:
            raise StatsInvalid(f"failing[{i}].since: must be epoch seconds")
        code = e.get("code")
        if not isinstance(code, str) or not PROXY_STATUS_TYPE.match(code):
            raise StatsInvalid(f"failing[{i}].code: must be a Proxy-Status type")
        failing.append(FailureRun(_count(e.get("target_id"), f"failing[{i}].target_id"),
                                  _count(e.get("count"), f"failing[{i}].count"), code, float(since)))
    return StatsReport(float(interval), routes, tuple(ejections), tuple(failing))


# ---------------------------------------------------------------- diagnostics
#
# control plane -> node (text frames; every command carries an "id" chosen by the
# control plane, answers and output carry the same id):
#   {"type": "tail.start", "id": str, "expires": epoch seconds,
#    "filter": {"routes": [route id] (absent: all; [] none), "hosts": [str],
#               "status": [int | "5xx"], "proxy_status": [code or RFC 9209 type],
#               "clients": [address or CIDR]}}
#       (sent again to renew: same id, new expires; the node drops a session at expiry)
#   {"type": "tail.stop", "id": str}
#   {"type": "capture.start", "id": str, "route": int, "count": 1..20, "expires": epoch,
#    "request_id": str (optional: only the request carrying this X-Request-ID)}
#   {"type": "capture.stop", "id": str}
#   {"type": "probe", "id": str, "url": str, "timeout": float, "insecure": bool,
#    "ca_pem": str, "sni": str, "host_header": str, "method": str,
#    "policy": {"restricted": bool, "allowed_networks": [cidr]}}
#   {"type": "tls.check", "id": str, "sni": str, "timeout": float}
#       (a probe of the node's own HTTPS listener, verification off, chain reported)
#   {"type": "synthetic", "id": str, "route": int, "host": str, "path": str, "method": str,
#    "headers": [[name, value]], "timeout": float}
#       (a request to the node's own HTTP listener with capture armed for it)
# node -> control plane:
#   {"type": "tail.lines", "id": str, "lines": [access-log object], "dropped": int}
#   {"type": "capture.record", "id": str, "record": {...}}  (see dataplane/diagnostics.py)
#   {"type": "probe.result", "id": str, "result": {...}}    (see dataplane/probe.py)
#   {"type": "synthetic.result", "id": str, "result": {"ok", "response": probe result,
#                                                      "capture": record | null}}
# hello may also carry "started" (epoch seconds the node process started).

MSG_TAIL_START = "tail.start"
MSG_TAIL_STOP = "tail.stop"
MSG_TAIL_LINES = "tail.lines"
MSG_CAPTURE_START = "capture.start"
MSG_CAPTURE_STOP = "capture.stop"
MSG_CAPTURE_RECORD = "capture.record"
MSG_PROBE = "probe"
MSG_PROBE_RESULT = "probe.result"
MSG_TLS_CHECK = "tls.check"
MSG_SYNTHETIC = "synthetic"
MSG_SYNTHETIC_RESULT = "synthetic.result"
DIAGNOSTIC_COMMANDS = (MSG_TAIL_START, MSG_TAIL_STOP, MSG_CAPTURE_START, MSG_CAPTURE_STOP,
                       MSG_PROBE, MSG_TLS_CHECK, MSG_SYNTHETIC)
DIAGNOSTIC_REPLIES = (MSG_TAIL_LINES, MSG_CAPTURE_RECORD, MSG_PROBE_RESULT, MSG_SYNTHETIC_RESULT)
MAX_CAPTURE_COUNT = 20


# ---------------------------------------------------------------- rate-limit shares
#
# A rate limit holds across nodes without a round trip per request: each node keeps
# local token buckets filled at its *share* of each limit, and every
# RATELIMIT_SECONDS reports its demand (requests per second seen, admitted or not;
# smoothed) so that the control plane can hand out new shares (dataplane/ratelimit.py).
# node -> control plane:
#   {"type": "ratelimit.report", "limits": {"<limit id>": {"demand": float,
#                                                          "keys": {"<key id>": float}}}}
#   limit id: "r:<route id>" or "t:<tenant slug>"; key id: 16 hex digits (a digest of the
#   client address or header value), only the node's hottest MAX_RATELIMIT_KEYS keys.
# control plane -> node:
#   {"type": "ratelimit.shares", "nodes": int, "fallback": bool, "since": epoch|null,
#    "limits": {"<limit id>": {"share": 0..1, "keys": {"<key id>": 0..1}}}}
#   ``fallback``: the shared store is unreachable (since ``since``): every node uses
#   1 / ``nodes`` of each limit until shares come again.

MSG_RATELIMIT_REPORT = "ratelimit.report"
MSG_RATELIMIT_SHARES = "ratelimit.shares"
RATELIMIT_SECONDS = 0.2
MAX_RATELIMIT_LIMITS = 10000
MAX_RATELIMIT_KEYS = 16
MAX_RATELIMIT_NODES = 10000
RATELIMIT_ID = re.compile(r"^(?:r:[0-9]{1,18}|t:[A-Za-z0-9_-]{1,100})$")
RATELIMIT_KEY = re.compile(r"^[0-9a-f]{16}$")


class RateLimitMessageInvalid(ValueError):
    """A rate-limit message that is not what this section describes; drop it whole."""


def _fraction_map(value: Any, path: str, keys: re.Pattern, limit: int, hi: float) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > limit:
        raise RateLimitMessageInvalid(f"{path}: must be an object of at most {limit} entries")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not keys.match(k):
            raise RateLimitMessageInvalid(f"{path}: unexpected key {str(k)[:40]!r}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= hi:
            raise RateLimitMessageInvalid(f"{path}.{k}: must be a number between 0 and {hi}")
        out[k] = float(v)
    return out


def _limit_entries(msg: Any, kind: str, field_name: str, hi: float) -> dict[str, tuple[float, dict]]:
    if not isinstance(msg, dict) or msg.get("type") != kind:
        raise RateLimitMessageInvalid(f"not a {kind} message")
    limits = msg.get("limits")
    if limits is None:
        limits = {}
    if not isinstance(limits, dict) or len(limits) > MAX_RATELIMIT_LIMITS:
        raise RateLimitMessageInvalid(f"limits: must be an object of at most {MAX_RATELIMIT_LIMITS}")
    out = {}
    for lid, entry in limits.items():
        if not isinstance(lid, str) or not RATELIMIT_ID.match(lid):
            raise RateLimitMessageInvalid(f"limits: unexpected limit id {str(lid)[:40]!r}")
        if not isinstance(entry, dict):
            raise RateLimitMessageInvalid(f"limits.{lid}: must be an object")
        value = entry.get(field_name, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= hi:
            raise RateLimitMessageInvalid(f"limits.{lid}.{field_name}: must be between 0 and {hi}")
        out[lid] = (float(value), _fraction_map(entry.get("keys"), f"limits.{lid}.keys",
                                                RATELIMIT_KEY, MAX_RATELIMIT_KEYS, hi))
    return out


def parse_ratelimit_report(msg: Any) -> dict[str, tuple[float, dict[str, float]]]:
    """A node's demand report (untrusted): {limit id: (demand, {key id: demand})}."""
    return _limit_entries(msg, MSG_RATELIMIT_REPORT, "demand", 1e9)


def parse_ratelimit_shares(msg: Any) -> tuple[int, bool, float | None, dict]:
    """(nodes, fallback, since, {limit id: (share, {key id: share})}) of a shares message."""
    limits = _limit_entries(msg, MSG_RATELIMIT_SHARES, "share", 1.0)
    nodes = msg.get("nodes", 1)
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= MAX_RATELIMIT_NODES:
        raise RateLimitMessageInvalid("nodes: must be a positive integer")
    since = msg.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, (int, float))):
        raise RateLimitMessageInvalid("since: must be epoch seconds or null")
    return nodes, bool(msg.get("fallback")), since, limits


# ---------------------------------------------------------------- on-demand TLS
#
# node -> control plane, at most every UNKNOWN_SNI_SECONDS while there are any:
#   {"type": "tls.unknown_sni", "names": [str, ...]}
# the SNI names of handshakes for a host a tenant's route serves and no certificate on the
# node covers (dataplane/ondemand.py); lower case, de-duplicated, at most MAX_UNKNOWN_SNI.

MSG_UNKNOWN_SNI = "tls.unknown_sni"
UNKNOWN_SNI_SECONDS = 1.0
MAX_UNKNOWN_SNI = 256
SNI_NAME = re.compile(r"(?=.{1,253}\Z)(?:(?!-)[a-z0-9-]{1,63}(?<!-)\.)+(?!-)[a-z0-9-]{1,63}(?<!-)")


def parse_unknown_sni(msg: Any) -> list[str]:
    """The valid, de-duplicated names of a ``tls.unknown_sni`` message (at most
    MAX_UNKNOWN_SNI; anything else in it is dropped, never an error)."""
    names = msg.get("names") if isinstance(msg, dict) else None
    if not isinstance(names, list):
        return []
    out: dict[str, None] = {}
    for name in names[:MAX_UNKNOWN_SNI]:
        if isinstance(name, str) and SNI_NAME.fullmatch(name):
            out[name] = None
    return list(out)
