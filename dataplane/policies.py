"""Route policies compiled at apply time: access lists and the maintenance switch.

An access list's ordered allow/deny rules (first match wins, then the list's default)
become, per address family, a partition of the address space into sorted integer
intervals, each with its decision. A request's check is then one ``bisect`` on a
list of ints and one index: no allocation, whatever the number of rules.

Pure standard library; the applier builds ``AccessGate`` objects, the forwarder
calls ``AccessGate.allows`` and answers a refusal with the gate's prebuilt 403.
"""
from __future__ import annotations

import ipaddress
from bisect import bisect_right
from typing import Iterable

from dataplane import errors, wire

V4_SPACE = 1 << 32
V6_SPACE = 1 << 128
MAX_RULES = 1000  # per access list (the schema refuses more)


class Intervals:
    """One family's partition: ``starts[i]`` (sorted, ``starts[0] == 0``) begins the
    interval whose decision is ``allowed[i]``."""

    __slots__ = ("starts", "allowed")

    def __init__(self, starts: list[int], allowed: list[bool]):
        self.starts = starts
        self.allowed = allowed

    def lookup(self, addr: int) -> bool:
        return self.allowed[bisect_right(self.starts, addr) - 1]


def compile_family(rules: Iterable[tuple[bool, int, int]], space: int, default: bool) -> Intervals:
    """``rules``: (allow, first address, last address) in order; the first rule that
    covers an address decides it, ``default`` decides what none covers."""
    rules = list(rules)
    bounds = sorted({0, *(lo for _, lo, _ in rules), *(hi + 1 for _, _, hi in rules if hi + 1 < space)})
    decisions: list[bool | None] = [None] * len(bounds)
    # first match wins: walk the rules in order, deciding only what is still undecided
    for allow, lo, hi in rules:
        i = bisect_right(bounds, lo) - 1
        while i < len(bounds) and bounds[i] <= hi:
            if decisions[i] is None:
                decisions[i] = allow
            i += 1
    starts: list[int] = []
    allowed: list[bool] = []
    for start, decision in zip(bounds, decisions):
        value = default if decision is None else decision
        if allowed and allowed[-1] == value:
            continue  # merge with the interval before: same decision
        starts.append(start)
        allowed.append(value)
    return Intervals(starts, allowed)


def network_range(cidr: str) -> tuple[int, int, int]:
    """(family 4 or 6, first, last) of a CIDR; raises ValueError."""
    net = ipaddress.ip_network(cidr, strict=False)
    return net.version, int(net.network_address), int(net.broadcast_address)


class AccessGate:
    """One access list as the hot path uses it."""

    __slots__ = ("id", "name", "v4", "v6", "template", "detail", "default",
                 "auth", "any")  # basic auth (dataplane.basicauth.BasicAuth) and satisfy any

    def __init__(self, acl_id: int, name: str, rules: Iterable[tuple[str, str]], default: str):
        self.id = acl_id
        self.name = name
        v4: list = []
        v6: list = []
        for action, cidr in rules:
            family, lo, hi = network_range(cidr)
            (v4 if family == 4 else v6).append((action == "allow", lo, hi))
        default_allow = self.default = default == "allow"
        self.v4 = compile_family(v4, V4_SPACE, default_allow)
        self.v6 = compile_family(v6, V6_SPACE, default_allow)
        self.detail = f"access list {name}"
        self.template = errors.Template("access_denied", 403, "http_request_denied",
                                        wire.sf_string(self.detail).decode("ascii"))
        self.auth = None   # set by the applier when the list has users
        self.any = False   # with users: a client the rules allow needs no password

    def allows(self, key: tuple[int, int] | None) -> bool:
        """``key``: the client address as ``address_key`` gives it; an address that is
        not one (a Unix socket peer) is decided by the IPv4 table's default."""
        if key is None:
            return self.default
        family, addr = key
        table = self.v4 if family == 4 else self.v6
        return table.allowed[bisect_right(table.starts, addr) - 1]


def address_key(ip: str | bytes) -> tuple[int, int] | None:
    """(family, integer) of a client address; an IPv4-mapped IPv6 address is IPv4 (a
    dual-stack listener reports IPv4 clients that way). None if ``ip`` is no address."""
    if isinstance(ip, bytes):
        ip = ip.decode("latin-1")
    ip = ip.strip()
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.version, int(addr)


def forwarded_client(xff: bytes, peer_key: tuple[int, int] | None, trusted) -> tuple[int, int] | None:
    """The client address a trusted peer's ``X-Forwarded-For`` names (SPEC 4): walking
    from the right, the first address that is not itself a trusted proxy (``trusted``:
    a predicate on address strings). A malformed entry ends the walk there: the hop
    that wrote it is the client, as far as this proxy can tell."""
    key = peer_key
    for part in reversed(xff.split(b",")):
        text = part.strip().decode("latin-1")
        if ":" in text and text.count(":") == 1:  # IPv4 with a port
            text = text.split(":", 1)[0]
        candidate = address_key(text)
        if candidate is None:
            return key
        key = candidate
        if not trusted(text.strip("[]")):
            return key
    return key


class Answer:
    """A prebuilt generated response (what ``errors.render`` needs of a template)."""

    __slots__ = ("status", "prefix", "body")

    def __init__(self, status: int, prefix: bytes, body: bytes):
        self.status = status
        self.prefix = prefix
        self.body = body


class Maintenance:
    """A route's maintenance answer: 503 with Retry-After, HTML or JSON, prebuilt."""

    __slots__ = ("html", "json", "detail")

    def __init__(self, route_name: str, retry_after: int):
        self.detail = "maintenance"
        retry = f"Retry-After: {retry_after}\r\n" if retry_after > 0 else ""
        html = (b"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                b"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                b"<title>Down for maintenance</title></head>\n<body style=\"font-family:sans-serif;"
                b"max-width:36rem;margin:4rem auto;padding:0 1rem\"><h1>Down for maintenance</h1>"
                b"<p>This site is being worked on and will be back shortly. Please try again "
                b"later.</p></body></html>\n")
        body_json = b'{"error": "maintenance", "status": 503, "message": ' \
                    b'"This service is down for maintenance; try again later."}\n'
        self.html = Answer(503, self._prefix(retry, "text/html; charset=utf-8", html), html)
        self.json = Answer(503, self._prefix(retry, "application/json", body_json), body_json)

    @staticmethod
    def _prefix(retry: str, ctype: str, body: bytes) -> bytes:
        return (
            "HTTP/1.1 503 Service Unavailable\r\n"
            f"Content-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n"
            f"{retry}"
            f'Proxy-Status: {errors.PROXY_NAME}; error=destination_unavailable; details="maintenance"\r\n'
            "X-Request-ID: "
        ).encode()

    def pick(self, headers: list) -> Answer:
        """The JSON answer when the client's Accept asks for JSON, else HTML."""
        for lname, _, value in headers:
            if lname == b"accept" and b"json" in value.lower() and b"text/html" not in value.lower():
                return self.json
        return self.html
