"""Hypothesis strategies over the writable fields of ``routes/``, ``pools/`` and
``certificates/``, for the gate property test (``test_gate_property.py``).

Every field is a ``Field``: ``plausible`` values (what a user would send) and ``hostile``
ones (control characters, VT/DEL, CR/LF, NUL, non-Latin-1 text, lone surrogates, huge
strings, odd regular expressions, cookie and header names with ``;``/``=``/spaces,
malformed or forbidden hosts, PEM garbage, numbers at and beyond their bounds, wrong
JSON types). A body holds a few plausible fields and at most one hostile one, so that
many changes are accepted (those are what the gate is about) and a refusal shrinks to
the field that causes it.

``changes(spaces)`` draws one example: a few API calls ``Change(actor, kind, body)``,
where ``actor`` is ``staff`` (platform objects) or ``editor`` (the tenant's objects),
``kind`` one of ``KINDS``, and ``spaces[actor]`` says where that actor's objects live
(``suffix`` of its hosts, ``pool`` id, an allowed ``target`` address). Certificates are
drawn as ``CertSpec``s and issued (trustme, cached) only when the call is made.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from hypothesis import strategies as st

ACTORS = ("staff", "editor")
KINDS = ("patch_route", "create_route", "patch_pool", "create_pool", "create_certificate")

# Characters that break parsers, wires and databases in one way or another.
SPECIALS = ("", " ", "\t", "\r", "\n", "\r\n", "\x00", "\x01", "\x0b", "\x0c", "\x1b", "\x7f", "\x80", "\x85",
            "\xa0", "\xff", "\u2028", "\ufeff", "\ud800", "\udfff", "€", "é", "ß", "İ", "ǅ", "🚀", "日本語",
            ";", "=", ",", '"', "'", "\\", "/", "..", ":", "*", "?", "#", "%00", "%0d%0a", "[", "]", "(", ")",
            "{", "}", "<", ">", "@", "$", "|", "^", "~", "`")
WRONG_TYPES = (None, True, 0, 1.5, "1", [], {}, ["x"], {"a": 1})


@dataclass(frozen=True)
class Field:
    plausible: st.SearchStrategy
    hostile: st.SearchStrategy


def _repeat(char: str, sizes: tuple[int, ...]) -> st.SearchStrategy[str]:
    return st.sampled_from(sizes).map(lambda n: char * n)


def spliced(*samples: str) -> st.SearchStrategy[str]:
    """Sample values with special characters or random text spliced in."""
    part = st.one_of(st.sampled_from(samples), st.sampled_from(SPECIALS), st.text(max_size=6))
    return st.lists(part, min_size=1, max_size=4).map("".join)


def text(plausible: st.SearchStrategy, *samples: str, huge: tuple[int, ...] = ()) -> Field:
    hostile = [spliced(*samples), st.text(max_size=30), st.sampled_from(WRONG_TYPES)]
    if huge:
        hostile.append(_repeat("a", huge))
    return Field(plausible, st.one_of(*hostile))


def choice(options: tuple[str, ...], *odd: str) -> Field:
    """One of ``options``; hostile: ``odd`` ones, a lone surrogate, anything else."""
    any_text = text(st.sampled_from(options), *options, *odd)
    return Field(any_text.plausible, st.one_of(st.sampled_from((*odd, "\ud800")), any_text.hostile))


def number(lo, hi, *, integer: bool, beyond=()) -> Field:
    """Inside [lo, hi] and at its bounds; hostile: just and far beyond them, wrong types."""
    inside = st.integers(lo, hi) if integer else st.floats(lo, hi, allow_nan=False)
    step = 1 if integer else 1e-3
    outside = st.sampled_from([lo - step, hi + step, *beyond, 2 ** 63, -(2 ** 63) - 1, 10 ** 30])
    return Field(st.one_of(inside, st.sampled_from([lo, hi])), st.one_of(outside, st.sampled_from(WRONG_TYPES)))


def flag() -> Field:
    return Field(st.booleans(), st.sampled_from(WRONG_TYPES))


def maybe(field: Field) -> st.SearchStrategy:
    """A request body: plausible, hostile, or not even a JSON object."""
    return st.one_of(field.plausible, field.hostile, st.sampled_from(WRONG_TYPES))


@st.composite
def _record(draw, fields: dict[str, Field], required: tuple[str, ...], hostile: bool) -> dict:
    """``required`` and up to four optional fields, all plausible but (when ``hostile``) one."""
    optional = sorted(set(fields) - set(required))
    names = [*required, *(draw(st.lists(st.sampled_from(optional), max_size=4, unique=True)) if optional else [])]
    spoiled = draw(st.sampled_from(sorted(fields))) if hostile else None
    if spoiled is not None and spoiled not in names:
        names.append(spoiled)
    return {name: draw(fields[name].hostile if name == spoiled else fields[name].plausible) for name in names}


def record(fields: dict[str, Field], required: tuple[str, ...] = ()) -> Field:
    """An object; hostile: one hostile field (a wrong type for the whole object is drawn
    only for request bodies, by ``maybe``, so nested hostility is not diluted)."""
    return Field(_record(fields, required, hostile=False), _record(fields, required, hostile=True))


def list_of(item: Field, min_size: int = 0, max_size: int = 3) -> Field:
    """Plausible items; hostile: one hostile item among them, or too few items."""
    plausible = st.lists(item.plausible, min_size=min_size, max_size=max_size)
    spoiled = st.tuples(st.lists(item.plausible, max_size=max_size - 1), item.hostile, st.integers(0, max_size)
                        ).map(lambda t: [*t[0][:t[2]], t[1], *t[0][t[2]:]])
    return Field(plausible, st.one_of(spoiled, st.just([])) if min_size else spoiled)


# ------------------------------------------------------------------ hosts

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
ODD_HOSTS = ("", " ", ".", "*", "*.", "*.*.x", "a..b", "-a.x", "a-.x", "a_b.x", "xn--", "xn--zz.x", "a b.x",
             "a\x00.x", "a\r\n.x", "[::1]", "127.0.0.1", "1.2.3.999", "0x7f.1", "host:99999", "host:80", "bücher",
             "ß", "İ", "\u0130.x", "x" * 64, ("a" * 63 + ".") * 4, "*.*", "..", "localhost", "LOCALHOST.")


def host_in(suffix: str, elsewhere: tuple[str, ...] = ()) -> Field:
    """Names inside ``suffix`` (case, trailing dot, port, IDNA, wildcard); hostile:
    malformed names, names with specials spliced in, names outside ``suffix``."""
    plausible = st.one_of(
        LABEL.map(lambda label: f"{label}.{suffix}"),
        LABEL.map(lambda label: f"*.{label}.{suffix}"),
        st.sampled_from([suffix, f"*.{suffix}", f"WWW.{suffix.upper()}", f"www.{suffix}.", f"www.{suffix}:8080",
                         f"bücher.{suffix}", f"xn--bcher-kva.{suffix}", f"ǅ.{suffix}", f"ß.{suffix}"]),
    )
    outside = ("evil.com", f"{suffix}.evil.com", f"*.{suffix.split('.', 1)[1]}", *elsewhere)
    hostile = st.one_of(st.sampled_from(ODD_HOSTS), spliced("www", ".").map(lambda h: f"{h}.{suffix}"),
                        st.sampled_from(outside), st.sampled_from(WRONG_TYPES))
    return Field(plausible, hostile)


# ------------------------------------------------------------------ headers

HEADER_NAMES = ("X-Gate", "X-Custom-Header", "Cache-Control", "Set-Cookie", "Accept", "x-lower", "X_Under",
                "!#$%&'*+-.^_`|~")
ODD_HEADER_NAMES = ("Content-Length", "Transfer-Encoding", "Connection", "Host", "X-Forwarded-For",
                    "x-forwarded-proto", "Forwarded", "Via", "Upgrade", "TE", "X-Request-ID", "X-Real-IP",
                    "Bad Name", "X:Y", "X;Y", "X=Y", "X-\r\nInjected", "é", "", "X-Gate\x00")
HEADER_VALUES = ("1", "text/html; charset=utf-8", "max-age=0, no-store", "a=b; Path=/; HttpOnly", "",
                 "quoted \"value\"", "a\tb")

HEADER_NAME = text(st.sampled_from(HEADER_NAMES), *HEADER_NAMES, huge=(200, 201))
HEADER_NAME = Field(HEADER_NAME.plausible, st.one_of(st.sampled_from(ODD_HEADER_NAMES), HEADER_NAME.hostile))
# What may not go on the wire: non-Latin-1, VT, DEL, other controls, CR/LF, NUL.
ODD_HEADER_VALUES = ("5\u20ac", "é", "🚀", "a\x0bb", "a\x7fb", "a\x01b", "\x00", "a\r\nX-Injected: 1", "a\nb",
                     "\u2028", "\ufeff", " leading", "trailing ")
HEADER_VALUE = text(st.sampled_from(HEADER_VALUES), *HEADER_VALUES, huge=(4096, 4097))
HEADER_VALUE = Field(HEADER_VALUE.plausible, st.one_of(st.sampled_from(ODD_HEADER_VALUES), HEADER_VALUE.hostile))
HEADER_PAIR = record({"name": HEADER_NAME, "value": HEADER_VALUE}, ("name", "value"))
HEADER_RULES = record({"set": list_of(HEADER_PAIR), "add": list_of(HEADER_PAIR), "remove": list_of(HEADER_NAME)})


# ------------------------------------------------------------------ routes

PATHS = ("/", "/api", "/api/", "/api/v1/items", "/%20encoded", "/ünïcode", "/a;b=c", "/~user/", "//double")
REGEXES = (r"^/api/(?P<id>[0-9]+)$", r"^/(a|b)/.*", r"(?i)^/CaseLess", r"^/\d{1,3}$", r"(a+)+$", r"^(a|a)*$",
           r"[", r"(", r"\\", r"a{1000000}", r"(?<=a)b", r"(?P<n>a)(?P=n)", r"\1", r"(?#comment)/x", r"^/ß$",
           r"[\x00-\x1f]", r"\p{L}", r"(?u)\w+", r"$^", r"", r"^/\Z", r"a**", r"(?P<>x)")
METHOD_NAMES = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")


def route_fields(actor: str, spaces: dict) -> dict[str, Field]:
    """Every writable route field except ``tenant``; ``certificate`` may be ``"created"``:
    the certificate created earlier in the same example."""
    elsewhere = tuple(f"www.{spaces[other]['suffix']}" for other in ACTORS if other != actor)
    pools = [spaces[a]["pool"] for a in ACTORS]
    return {
        "name": text(st.integers(0, 10 ** 6).map(lambda n: f"gate-route-{n}"), "gate-route", huge=(200, 201)),
        "hosts": list_of(host_in(spaces[actor]["suffix"], elsewhere), min_size=1),
        "path": text(st.sampled_from(PATHS), *PATHS, huge=(2048, 2049)),
        "path_type": choice(("prefix", "exact", "regex"), "glob", "PREFIX"),
        "methods": list_of(Field(st.sampled_from(METHOD_NAMES),
                                 text(st.nothing(), "get", " GET", "BREW", "G ET", "PROPFIND", huge=(20, 21)).hostile)),
        "headers": list_of(HEADER_PAIR, max_size=2),
        "priority": number(-100_000, 100_000, integer=True, beyond=[2 ** 31 - 1, -(2 ** 31), 2 ** 31]),
        "pool": Field(st.just(spaces[actor]["pool"]),
                      st.one_of(st.sampled_from(pools), number(1, 2 ** 63 - 1, integer=True).hostile)),
        "strip_prefix": flag(),
        "preserve_host": flag(),
        "request_headers": HEADER_RULES,
        "response_headers": HEADER_RULES,
        "websocket": flag(),
        "https_redirect": flag(),
        "hsts_max_age": number(0, 10 * 365 * 86400, integer=True, beyond=[2 ** 31 - 1, 2 ** 31]),
        "max_body_size": number(0, 1 << 40, integer=True, beyond=[2 ** 63 - 1]),
        "forwarded": flag(),
        "certificate": Field(st.one_of(st.none(), st.just("created")), st.integers(1, 2 ** 63 - 1)),
        "acme": flag(),
        "enabled": flag(),
    }


# Values that reach the node's builders only together with another field, or deep inside
# a nested one: drawn as such, so that they are common rather than a rare coincidence.
ROUTE_COMBOS = st.one_of(
    # a regular expression travels in `path` and is odd only with path_type regex
    st.fixed_dictionaries({"path_type": st.just("regex"), "path": st.sampled_from(REGEXES)}),
    # one odd value in a header rule, or in a header match
    st.tuples(st.sampled_from(["request_headers", "response_headers"]), st.sampled_from(["set", "add"]),
              HEADER_NAME.plausible, HEADER_VALUE.hostile).map(lambda t: {t[0]: {t[1]: [{"name": t[2], "value": t[3]}]}}),
    st.tuples(HEADER_NAME.plausible, HEADER_VALUE.hostile).map(lambda t: {"headers": [{"name": t[0], "value": t[1]}]}),
)


# ------------------------------------------------------------------ pools

COOKIE_NAMES = ("SESSION", "sticky", "__Host-gate", "a.b", "JSESSIONID")
ODD_COOKIE_NAMES = ("a;b", "a=b", "a b", "a,b", "é", "a\tb", "a\x7fb", "\"q\"", "a\r\nSet-Cookie: x=1", "(x)")
COOKIE = text(st.sampled_from(COOKIE_NAMES), *COOKIE_NAMES, huge=(200, 201))
COOKIE = Field(COOKIE.plausible, st.one_of(st.sampled_from(ODD_COOKIE_NAMES), COOKIE.hostile))
TARGET_HOSTS = ("93.184.216.35", "2606:2800:220:1:248:1893:25c8:1946", "backend.gate.invalid",
                "BACKEND.gate.invalid.", "bücher.invalid")
FORBIDDEN_TARGETS = ("127.0.0.1", "169.254.169.254", "0x7f.1", "2130706433", "[::ffff:127.0.0.1]", "localhost",
                     "10.1.2.3", "0.0.0.0", "::", "fe80::1%eth0", "224.0.0.1")
STATUSES = ("200-399", "200", "200,204", "200-299, 301")
ODD_STATUSES = ("2xx", "399-200", "0-999", "200-", "", "200,,204", "２００")


def target(allowed: str) -> Field:
    host = Field(st.sampled_from((allowed, *TARGET_HOSTS)),
                 st.one_of(st.sampled_from(FORBIDDEN_TARGETS), st.sampled_from(ODD_HOSTS),
                           st.sampled_from(WRONG_TYPES)))
    return record({"host": host, "port": number(1, 65535, integer=True), "weight": number(0, 1000, integer=True),
                   "enabled": flag(), "state": choice(("enabled", "disabled", "draining"), "gone")},
                  ("host", "port"))


HEALTH_CHECK = record({
    "enabled": flag(),
    "type": choice(("http", "tcp"), "udp"),
    "path": text(st.sampled_from(["/", "/healthz", "/status?full=1"]), "/health", huge=(2048, 2049)),
    "method": choice(("GET", "HEAD", "OPTIONS"), "POST", "get", "G ET"),
    "expected_statuses": Field(st.sampled_from(STATUSES),
                               st.one_of(st.sampled_from(ODD_STATUSES), text(st.nothing(), *STATUSES).hostile)),
    "host": text(st.sampled_from(["", "health.gate.invalid", "health.gate.invalid:8080"]), "health.gate",
                 huge=(253, 254)),
    "interval": number(1.0, 3600.0, integer=False),
    "timeout": number(0.1, 60.0, integer=False),
    "healthy_threshold": number(1, 100, integer=True, beyond=[32767, 32768]),
    "unhealthy_threshold": number(1, 100, integer=True, beyond=[32767, 32768]),
}, ("enabled",))


@functools.lru_cache(maxsize=1)
def _ca():
    import trustme
    return trustme.CA()


def ca_pem() -> str:
    return _ca().cert_pem.bytes().decode()


PEM_GARBAGE = ("garbage", "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
               "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
               "-----BEGIN CERTIFICATE-----\n", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
               "\x00", "é")
# A pool's `tls_ca_pem`: empty or a real CA; hostile: that CA with junk around it, garbage.
CA_BUNDLE = Field(
    st.one_of(st.just(""), st.builds(ca_pem)),
    st.one_of(st.tuples(st.builds(ca_pem), st.sampled_from(("\n# comment\n", "\r\n", "trailing junk", "\x00", "€"))
                        ).map("".join),
              st.sampled_from(PEM_GARBAGE), _repeat("A", (1 << 20, (1 << 20) + 1)), st.sampled_from(WRONG_TYPES)))


def pool_fields(allowed_target: str) -> dict[str, Field]:
    return {
        "name": text(st.integers(0, 10 ** 6).map(lambda n: f"gate-pool-{n}"), "gate-pool", huge=(200, 201)),
        "algorithm": choice(("round_robin", "least_conn", "random", "consistent_hash"), "ring_hash"),
        "hash_on": choice(("client_ip", "header", "cookie"), "uri"),
        "hash_key": Field(st.one_of(COOKIE.plausible, HEADER_NAME.plausible),
                          st.one_of(COOKIE.hostile, HEADER_NAME.hostile)),
        "sticky_cookie": Field(st.one_of(st.just(""), COOKIE.plausible), COOKIE.hostile),
        "connect_timeout": number(0.05, 300.0, integer=False, beyond=[0.0, 1e308]),
        "read_timeout": number(0.05, 3600.0, integer=False),
        "retries": number(0, 10, integer=True, beyond=[32767, 32768]),
        "passive_failures": number(0, 1000, integer=True, beyond=[32767]),
        "passive_ejection_seconds": number(1.0, 3600.0, integer=False),
        "tls_enabled": flag(),
        "tls_verify": flag(),
        "tls_ca_pem": CA_BUNDLE,
        "tls_sni": Field(st.one_of(st.just(""), host_in("gate.invalid").plausible), host_in("gate.invalid").hostile),
        "health_check": HEALTH_CHECK,
        "targets": list_of(target(allowed_target), min_size=1),
    }


def pool_combos(fields: dict[str, Field]) -> st.SearchStrategy[dict]:
    """Upstream TLS with an odd CA bundle or SNI, hashing on an odd key, an odd sticky
    cookie, and an enabled health check with one odd setting."""
    return st.one_of(
        st.fixed_dictionaries({"tls_enabled": st.just(True), "tls_ca_pem": CA_BUNDLE.hostile}),
        st.fixed_dictionaries({"tls_enabled": st.just(True), "tls_sni": fields["tls_sni"].hostile}),
        st.fixed_dictionaries({"algorithm": st.just("consistent_hash"), "hash_on": st.sampled_from(["header", "cookie"]),
                               "hash_key": fields["hash_key"].hostile}),
        st.fixed_dictionaries({"sticky_cookie": COOKIE.hostile}),
        HEALTH_CHECK.hostile.map(lambda check: {"health_check": {**check, "enabled": True}}),
    )


# ------------------------------------------------------------------ certificates

@functools.lru_cache(maxsize=None)
def issued(names: tuple[str, ...]) -> tuple[str, str]:
    """(certificate_pem with chain, private_key_pem) for ``names``, from one test CA."""
    leaf = _ca().issue_cert(*names)
    chain = "".join(p.bytes().decode() for p in leaf.cert_chain_pems)
    return chain, leaf.private_key_pem.bytes().decode()


def _spoiled(pem: str, key: str, how: str) -> dict:
    other_pem, other_key = issued(("other.invalid",))
    return {
        "": {},
        "crlf": {"certificate_pem": pem.replace("\n", "\r\n")},
        "trailing_junk": {"certificate_pem": pem + "junk after the chain\n"},
        "junk_between": {"certificate_pem": pem.replace("-----\n-----BEGIN", "-----\nnoise\x0b\n-----BEGIN", 1)},
        "leading_junk": {"certificate_pem": "€" + pem},
        "chain_first": {"certificate_pem": "".join(reversed(pem.split("-----END CERTIFICATE-----\n")[:-1]))},
        "other_key": {"private_key_pem": other_key},
        "key_as_cert": {"certificate_pem": key},
        "two_leaves": {"certificate_pem": pem + other_pem},
        "garbage": {"certificate_pem": PEM_GARBAGE[2]},
        "nul": {"certificate_pem": pem + "\x00"},
        "no_key": {"private_key_pem": ""},
    }[how]


SPOILS = ("crlf", "trailing_junk", "junk_between", "leading_junk", "chain_first", "other_key", "key_as_cert",
          "two_leaves", "garbage", "nul", "no_key")


@dataclass(frozen=True)
class CertSpec:
    """A certificate upload: the names to issue it for, then how to spoil it ("": not)."""
    names: tuple[str, ...]
    spoil: str = ""

    def body(self, name) -> dict:
        pem, key = issued(self.names)
        return {"name": name, "certificate_pem": pem, "private_key_pem": key, **_spoiled(pem, key, self.spoil)}


def cert_spec(suffix: str) -> Field:
    inside = st.one_of(st.sampled_from([f"*.{suffix}", f"www.{suffix}", suffix, f"bücher.{suffix}",
                                        f"xn--bcher-kva.{suffix}"]), LABEL.map(lambda label: f"{label}.{suffix}"))
    names = st.lists(inside, min_size=1, max_size=3, unique=True).map(tuple)
    outside = st.tuples(names, st.sampled_from(["evil.com", "127.0.0.1", f"*.{suffix.split('.', 1)[1]}"])
                        ).map(lambda t: (*t[0], t[1]))
    return Field(st.builds(CertSpec, names),
                 st.one_of(st.builds(CertSpec, names, st.sampled_from(SPOILS)), st.builds(CertSpec, outside)))


# ------------------------------------------------------------------ one API call

@dataclass(frozen=True)
class Change:
    actor: str
    kind: str
    body: object


def merged(*parts: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
    return st.tuples(*parts).map(lambda dicts: {k: v for d in dicts for k, v in d.items()})


def change_of(actor: str, spaces: dict) -> st.SearchStrategy[Change]:
    routes, pools = route_fields(actor, spaces), pool_fields(spaces[actor]["target"])
    new_route, new_pool = record(routes, ("name", "hosts", "pool")), record(pools, ("name", "targets"))
    name, spec = text(st.just("gate-cert"), "gate-cert", huge=(200, 201)), cert_spec(spaces[actor]["suffix"])
    bodies = {
        "patch_route": st.one_of(maybe(record(routes)), ROUTE_COMBOS),
        "create_route": st.one_of(maybe(new_route), merged(new_route.plausible, ROUTE_COMBOS)),
        "patch_pool": st.one_of(maybe(record(pools)), pool_combos(pools)),
        "create_pool": st.one_of(maybe(new_pool), merged(new_pool.plausible, pool_combos(pools))),
        "create_certificate": st.one_of(
            st.fixed_dictionaries({"name": name.plausible, "spec": spec.plausible}),
            st.fixed_dictionaries({"name": name.hostile, "spec": spec.plausible}),
            st.fixed_dictionaries({"name": name.plausible, "spec": spec.hostile})),
    }
    return st.one_of(*(st.builds(Change, st.just(actor), st.just(kind), bodies[kind]) for kind in KINDS))


def changes(spaces: dict) -> st.SearchStrategy[list[Change]]:
    """One example: 1 to 3 API calls, each by staff or by the tenant editor."""
    one = st.one_of(*(change_of(actor, spaces) for actor in ACTORS))
    return st.lists(one, min_size=1, max_size=3)
