from dataplane import schema
from dataplane.router import RouteEntry, Router, normalize_host
from tests.dataplane.helpers import pool, route, snapshot


def build(*routes: dict) -> Router:
    snap = schema.parse_snapshot(snapshot([pool(1, [(1, "127.0.0.1", 1)])], list(routes)))
    return Router(RouteEntry(r) for r in snap.routes)


def name(router: Router, host: str, path: str = "/", method: bytes = b"GET",
         headers: list = ()) -> str | None:
    hs = [(k.lower(), k, v) for k, v in headers]
    e = router.match(normalize_host(host.encode()), path, method, hs)
    return e.name if e else None


def test_host_normalised():
    assert normalize_host(b"App.Example.COM.:8080") == "app.example.com"
    assert normalize_host(b"[::1]:80") == "[::1]"
    r = build(route(1, ["app.example.com"], 1, name="a"))
    assert name(r, "APP.example.com.:443") == "a"
    assert name(r, "other.example.com") is None


def test_exact_host_beats_wildcard_and_longest_suffix_wins():
    r = build(route(1, ["*.example.com"], 1, name="wild"),
              route(2, ["*.shop.example.com"], 1, name="shopwild"),
              route(3, ["api.shop.example.com"], 1, name="exact"))
    assert name(r, "api.shop.example.com") == "exact"
    assert name(r, "x.shop.example.com") == "shopwild"
    assert name(r, "a.b.shop.example.com") == "shopwild"
    assert name(r, "x.example.com") == "wild"
    assert name(r, "example.com") is None  # a wildcard does not cover its own suffix


def test_wildcard_serves_what_exact_host_leaves_out():
    r = build(route(1, ["*.example.com"], 1, name="wild"),
              route(2, ["api.example.com"], 1, path="/v1", name="exact"))
    assert name(r, "api.example.com", "/v1/x") == "exact"
    assert name(r, "api.example.com", "/other") == "wild"


def test_path_types_exact_then_longest_prefix_then_regex():
    r = build(route(1, ["h.test"], 1, path="/", name="root"),
              route(2, ["h.test"], 1, path="/api", name="api"),
              route(3, ["h.test"], 1, path="/api/v2", name="v2"),
              route(4, ["h.test"], 1, path="/api/v2/status", path_type="exact", name="status"),
              route(5, ["r.test"], 1, path="^/img/.*\\.png$", path_type="regex", name="png"))
    assert name(r, "h.test", "/api/v2/status") == "status"
    assert name(r, "h.test", "/api/v2/status/x") == "v2"
    assert name(r, "h.test", "/api/v1") == "api"
    assert name(r, "h.test", "/else") == "root"
    assert name(r, "r.test", "/img/a.png") == "png"
    assert name(r, "r.test", "/img/a.gif") is None


def test_regex_in_priority_order():
    r = build(route(1, ["h.test"], 1, path="^/a", path_type="regex", priority=1, name="low"),
              route(2, ["h.test"], 1, path="^/a/b", path_type="regex", priority=5, name="high"))
    assert name(r, "h.test", "/a/b/c") == "high"
    assert name(r, "h.test", "/a/c") == "low"


def test_priority_among_same_prefix_and_filters():
    r = build(route(1, ["h.test"], 1, path="/x", name="any"),
              route(2, ["h.test"], 1, path="/x", methods=["POST"], priority=10, name="post"),
              route(3, ["h.test"], 1, path="/x", headers=[{"name": "X-Canary", "value": "1"}],
                    priority=5, name="canary"))
    assert name(r, "h.test", "/x", b"POST") == "post"
    assert name(r, "h.test", "/x", b"GET", [(b"X-Canary", b"1")]) == "canary"
    assert name(r, "h.test", "/x", b"GET", [(b"X-Canary", b"2")]) == "any"
    assert name(r, "h.test", "/x", b"POST", [(b"X-Canary", b"1")]) == "post"


def test_methods_filter_without_fallback_is_no_match():
    r = build(route(1, ["h.test"], 1, path="/w", methods=["PUT"], name="put"))
    assert name(r, "h.test", "/w", b"PUT") == "put"
    assert name(r, "h.test", "/w", b"GET") is None


def test_lookup_does_not_scan_routes():
    many = [route(i, [f"h{i}.test", f"*.w{i}.test"], 1, name=f"r{i}") for i in range(1, 3001)]
    r = build(*many)
    assert len(r.exact) == 3000 and len(r.wildcard) == 3000
    assert name(r, "h2999.test") == "r2999"
    assert name(r, "a.b.w17.test") == "r17"
