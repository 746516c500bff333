"""Basic auth on a route (snapshot Route ``basic_auth``): the schema's checks, the one
``BasicAuth`` verifier built for the route with its realm, and on the wire (an in-process
proxy with a real backend on loopback) alone and together with an access list's users."""
import pytest

from dataplane import basicauth, schema
from tests.dataplane.helpers import Backend, Proxy, get, pool, route, snapshot
from tests.dataplane.test_basic_auth import HASH, acl, basic, counted  # noqa: F401 - fixture

PASSWORD = "s3cret pässword"  # HASH's
OTHER = basicauth.make_hash("other")


def auth(users, realm=None):
    value = {"users": [{"username": u, "password_hash": h} for u, h in users]}
    return value if realm is None else {"realm": realm, **value}


def snap_with(basic_auth, name="r1", **kw):
    r = route(1, ["private.test"], 1, basic_auth=basic_auth, **kw)
    r["name"] = name
    return snapshot([pool(1, [(1, "127.0.0.1", 9)])], [r])


def test_the_schema_reads_realm_and_users_the_realm_defaults_to_the_route_name():
    parsed = schema.parse_snapshot(snap_with(auth([("alice", HASH)]), name="shop")).routes[0]
    assert parsed.basic_auth == schema.RouteBasicAuth("shop", (schema.BasicAuthUser("alice", HASH),))
    parsed = schema.parse_snapshot(snap_with(auth([("alice", HASH)], realm="Team area"))).routes[0]
    assert parsed.basic_auth.realm == "Team area"
    assert schema.parse_snapshot(snap_with(None)).routes[0].basic_auth is None


@pytest.mark.parametrize("value, path", [
    (auth([]), "routes[0].basic_auth.users"),
    ({"realm": "x"}, "routes[0].basic_auth.users"),
    (auth([("a:b", HASH)]), "routes[0].basic_auth.users[0].username"),
    (auth([("alice", HASH), ("alice", HASH)]), "routes[0].basic_auth.users[1].username"),
    (auth([("alice", "md5$1$2$3")]), "routes[0].basic_auth.users[0].password_hash"),
    (auth([("alice", HASH)], realm="caf\u00e9"), "routes[0].basic_auth.realm"),
    (auth([("alice", HASH)], realm="x\r\nSet-Cookie: a=b"), "routes[0].basic_auth.realm"),
    (auth([("alice", HASH)], realm="x" * 201), "routes[0].basic_auth.realm"),
    (auth([("alice", HASH)], realm=3), "routes[0].basic_auth.realm"),
    ("on", "routes[0].basic_auth"),
])
def test_the_schema_refuses_bad_route_basic_auth(value, path):
    with pytest.raises(schema.SnapshotInvalid) as exc:
        schema.parse_snapshot(snap_with(value))
    assert path in [e.path for e in exc.value.errors]


def test_one_verifier_class_for_lists_and_routes_kept_while_realm_and_users_are_the_same():
    r = schema.parse_snapshot(snap_with(auth([("alice", HASH)], realm="kept route"))).routes[0]
    first = basicauth.BasicAuth.of(r)
    assert isinstance(first, basicauth.BasicAuth) and first.detail == "basic auth kept route"
    assert basicauth.BasicAuth.of(r) is first
    renamed = schema.parse_snapshot(snap_with(auth([("alice", HASH)], realm="other realm"))).routes[0]
    assert basicauth.BasicAuth.of(renamed) is not first
    # an access list with the same id, name and users is another verifier (another cache)
    a = schema.parse_snapshot({**snapshot([pool(1, [(1, "127.0.0.1", 9)])], [route(1, ["a.test"], 1, access_list=1)]),
                               "access_lists": [{**acl([("alice", HASH)], name="kept route"), "id": 1}]}).access_lists[0]
    assert basicauth.BasicAuth.of(a) is not first


async def test_route_users_alone_then_with_an_access_lists_users(counted):
    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])],
                    [route(1, ["private.test"], 1, basic_auth=auth([("alice", HASH), ("bob", OTHER)],
                                                                    realm="route realm")),
                     route(2, ["both.test"], 1, access_list=3,
                           basic_auth=auth([("alice", HASH), ("bob", OTHER)], realm="both realm")),
                     route(3, ["pass.test"], 1, forward_authorization=True,
                           basic_auth=auth([("alice", HASH)], realm="pass realm"))])
    snap["access_lists"] = [acl([("alice", HASH), ("carol", OTHER)], name="list realm")]
    proxy = await Proxy(snap).start()
    try:
        r = await get(proxy.port, host="private.test")
        assert r.status == 401 and not backend.requests
        assert r.one("www-authenticate") == 'Basic realm="route realm", charset="UTF-8"'
        assert r.one("proxy-status") == 'switchyard; error=http_request_denied; details="basic auth route realm"'
        r = await get(proxy.port, host="private.test", headers=[("Authorization", basic("alice", "wrong"))])
        assert r.status == 401
        good = basic("alice", PASSWORD)
        r = await get(proxy.port, host="private.test", headers=[("Authorization", good)])
        assert r.status == 200 and not backend.requests[-1].header("authorization")
        assert (await get(proxy.port, host="private.test",
                          headers=[("Authorization", basic("bob", "other"))])).status == 200

        # both: bob is only the route's user (the list refuses), carol only the list's
        r = await get(proxy.port, host="both.test", headers=[("Authorization", basic("bob", "other"))])
        assert r.status == 401 and 'realm="list realm"' in r.one("www-authenticate")
        r = await get(proxy.port, host="both.test", headers=[("Authorization", basic("carol", "other"))])
        assert r.status == 401 and 'realm="both realm"' in r.one("www-authenticate")
        assert 'details="basic auth both realm"' in r.one("proxy-status")
        n = len(backend.requests)
        r = await get(proxy.port, host="both.test", headers=[("Authorization", good)])
        assert r.status == 200 and len(backend.requests) == n + 1
        assert not backend.requests[-1].header("authorization")

        # forward_authorization passes the header on
        r = await get(proxy.port, host="pass.test", headers=[("Authorization", good)])
        assert r.status == 200 and backend.requests[-1].header("authorization") == [good.encode()]
    finally:
        await proxy.close()
        await backend.close()
