"""Route matching, compiled once per snapshot at apply time.

Host lookup is a dict hit for exact names and one dict hit per label suffix for
wildcards, so its cost does not grow with the number of routes. Within a host:
exact path, then longest prefix, then regexes; where several routes match the same
way, higher ``priority`` wins, and methods and header matches filter.
If the exact host has no route for the request, wildcard hosts are tried next
(longest suffix first), so a wildcard can serve what an exact host leaves out.

Route regexes run on RE2: matching time is linear in the path, whatever the pattern.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

import re2
from re2 import _re2  # the binding itself: re2.compile's search builds match objects per call

from dataplane import wire

Headers = list  # [(lower name bytes, raw name bytes, value bytes), ...]

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is reported to the user, not logged
_RE2_OPTIONS.never_capture = True  # only "does it match" is asked
_UNANCHORED = _re2.RE2.Anchor.UNANCHORED


class PathRegex:
    """A route's ``path`` regex compiled by RE2 (UTF-8; RE2 syntax: no backreferences,
    no lookaround). ``search`` has the semantics of ``re.search`` on the path's text.
    Raises ValueError for a pattern RE2 refuses."""

    __slots__ = ("pattern", "_re")

    def __init__(self, pattern: str):
        self.pattern = pattern
        try:
            self._re = _re2.RE2(pattern.encode("utf-8"), _RE2_OPTIONS)
        except UnicodeEncodeError:
            raise ValueError("invalid regular expression: not valid Unicode text") from None
        if not self._re.ok():
            detail = self._re.error()
            detail = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else detail
            raise ValueError(f"invalid regular expression for RE2 ({detail}); RE2 matches in linear "
                             "time and has no backreferences or lookaround")

    def search(self, path: bytes) -> bool:
        """Whether the pattern matches anywhere in ``path`` (the path's UTF-8 bytes)."""
        return self._re.Match(_UNANCHORED, path, 0, len(path))[0][0] >= 0


class RouteEntry:
    """One route as the hot path needs it. Extra attributes (pool, stats, header
    rules) are attached by the applier; the router reads only the matching ones."""

    __slots__ = (
        "id", "name", "tenant", "route", "path", "path_type", "regex", "priority",
        "methods", "header_matches", "pool", "stats", "log_prefix",
        "strip_prefix", "preserve_host", "max_body_size", "forwarded",
        "req_drop", "req_extra", "resp_drop", "resp_extra", "resp_drop_tls", "resp_extra_tls",
        "websocket", "https_redirect",
        "access", "maintenance",  # dataplane.policies: AccessGate and Maintenance, or None
        "forward_auth",  # dataplane.forwardauth.ForwardAuth, or None
        "rate_limits",  # dataplane.ratelimit.Limit: the route's own, then its tenant's
        "pages",  # dataplane.errorpages.Answers of the route, or None (the platform's)
        "basic_auth",  # dataplane.basicauth.BasicAuth of the route's own users, or None
    )

    def __init__(self, route: Any):
        self.route = route
        self.id = route.id
        self.name = route.name
        self.tenant = route.tenant
        self.path = route.path
        self.path_type = route.path_type
        self.regex = PathRegex(route.path) if route.path_type == "regex" else None
        self.priority = route.priority
        self.methods = frozenset(m.encode() for m in route.methods) or None
        self.header_matches = tuple((wire.header_name(m.name).lower(), wire.header_value(m.value))
                                    for m in route.headers)
        self.strip_prefix = route.strip_prefix
        self.preserve_host = route.preserve_host
        self.max_body_size = route.max_body_size
        self.forwarded = route.forwarded
        self.websocket = route.websocket
        self.https_redirect = route.https_redirect
        self.pool = None
        self.stats = None
        self.log_prefix = ""
        self.req_drop = self.resp_drop = self.resp_drop_tls = frozenset()
        self.req_extra = self.resp_extra = self.resp_extra_tls = b""
        self.access = self.maintenance = None
        self.basic_auth = None
        self.rate_limits = ()
        self.forward_auth = None
        self.pages = None

    def accepts(self, method: bytes, headers: Headers) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        for lname, value in self.header_matches:
            for h in headers:
                if h[0] == lname and h[2] == value:
                    break
            else:
                return False
        return True


def _order(e: RouteEntry) -> tuple:
    # Higher priority first; among equals, the more specific (methods/headers) first.
    return (-e.priority, -(e.methods is not None) - len(e.header_matches), e.id)


class HostTable:
    __slots__ = ("exact", "prefix", "prefix_lens", "regex")

    def __init__(self, entries: Iterable[RouteEntry]):
        self.exact: dict[str, list[RouteEntry]] = {}
        self.prefix: dict[str, list[RouteEntry]] = {}
        regex: list[RouteEntry] = []
        for e in entries:
            if e.path_type == "exact":
                self.exact.setdefault(e.path, []).append(e)
            elif e.path_type == "prefix":
                self.prefix.setdefault(e.path, []).append(e)
            else:
                regex.append(e)
        for group in (*self.exact.values(), *self.prefix.values()):
            group.sort(key=_order)
        regex.sort(key=_order)
        self.regex = tuple(regex)
        self.prefix_lens = tuple(sorted({len(p) for p in self.prefix}, reverse=True))

    def match(self, path: str, method: bytes, headers: Headers) -> RouteEntry | None:
        group = self.exact.get(path)
        if group is not None:
            for e in group:
                if e.accepts(method, headers):
                    return e
        n = len(path)
        prefix = self.prefix
        for length in self.prefix_lens:
            if length <= n:
                group = prefix.get(path[:length])
                if group is not None:
                    for e in group:
                        if e.accepts(method, headers):
                            return e
        if self.regex:
            text = path.encode()
            for e in self.regex:
                if e.regex.search(text) and e.accepts(method, headers):
                    return e
        return None


class Router:
    __slots__ = ("exact", "wildcard", "size")

    def __init__(self, entries: Iterable[RouteEntry]):
        exact: dict[str, list[RouteEntry]] = {}
        wildcard: dict[str, list[RouteEntry]] = {}
        n = 0
        for e in entries:
            n += 1
            for host in e.route.hosts:
                if host.startswith("*."):
                    wildcard.setdefault(host[2:], []).append(e)
                else:
                    exact.setdefault(host, []).append(e)
        self.exact = {h: HostTable(es) for h, es in exact.items()}
        self.wildcard = {h: HostTable(es) for h, es in wildcard.items()}
        self.size = n

    def match(self, host: str, path: str, method: bytes, headers: Headers) -> RouteEntry | None:
        table = self.exact.get(host)
        if table is not None:
            e = table.match(path, method, headers)
            if e is not None:
                return e
        wildcard = self.wildcard
        if not wildcard:
            return None
        i = host.find(".")
        while i >= 0:  # longest suffix first: a.b.example.com -> b.example.com -> example.com
            table = wildcard.get(host[i + 1:])
            if table is not None:
                e = table.match(path, method, headers)
                if e is not None:
                    return e
            i = host.find(".", i + 1)
        return None


# a Host the proxy routes on: a DNS name or an IP literal, then an optional port
# (no userinfo, path, list or empty value; RFC 9112 3.2 asks for a 400 otherwise)
VALID_HOST = re.compile(rb"(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?")
_host_cache: dict[bytes, str | None] = {}


def normalize_host(raw: bytes) -> str | None:
    """Host header -> routing key: lower case, no port, no trailing dot; None when the
    value is not a host. Cached per value, the refused ones too."""
    try:
        return _host_cache[raw]
    except KeyError:
        pass
    host = _routing_key(raw) if VALID_HOST.fullmatch(raw.strip(b" \t")) else None
    if len(_host_cache) > 4096:
        _host_cache.clear()
    _host_cache[raw] = host
    return host


def _routing_key(raw: bytes) -> str:
    s = raw.decode("latin-1").strip().lower()
    if s.startswith("["):  # IPv6 literal
        end = s.find("]")
        return s[: end + 1] if end > 0 else s
    colon = s.rfind(":")
    if colon >= 0:
        s = s[:colon]
    return s.rstrip(".")
