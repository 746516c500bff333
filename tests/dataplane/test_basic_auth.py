"""Basic auth on access lists (dataplane.basicauth): the hash format the snapshot carries,
the verification cache, the failure throttle, and the node's 401/429 on the wire
(an in-process proxy with a real backend on loopback)."""
import asyncio
import base64
import json

import pytest

from dataplane import basicauth, schema
from tests.dataplane.helpers import Backend, Client, Proxy, get, pool, route, snapshot

# a fixed salt: parametrised ids are built from it and must match on every xdist worker
HASH = basicauth.make_hash("s3cret pässword", salt=b"switchyard-tests")  # ~60 ms, once per run


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def acl(users, name="staff", **kw):
    """Each test names its lists apart: a BasicAuth (and its cache) is shared by every
    list with the same id, name and users while one is alive (BasicAuth.of)."""
    return {"id": 3, "name": name, "tenant": None, "rules": [], "default": "allow",
            "users": [{"username": u, "password_hash": h} for u, h in users], **kw}


def test_the_hash_format_is_pbkdf2_sha256_with_a_random_salt():
    algorithm, iterations, salt, digest = HASH.split("$")
    assert algorithm == "pbkdf2_sha256" and int(iterations) == basicauth.ITERATIONS
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    again = basicauth.make_hash("s3cret pässword")
    assert again != HASH  # a new salt each time
    parsed = schema.parse_password_hash(HASH)
    assert basicauth.check_password("s3cret pässword".encode(), parsed)
    assert not basicauth.check_password(b"s3cret", parsed)


@pytest.mark.parametrize("bad, message", [
    ("md5$1$2$3", r"must be pbkdf2_sha256\$"),
    ("pbkdf2_sha256$1000$" + HASH.split("$", 2)[2], "iterations must be between"),
    ("pbkdf2_sha256$9999999$" + HASH.split("$", 2)[2], "iterations must be between"),
    ("$".join(HASH.split("$")[:2] + ["c2hvcnQ=", HASH.split("$")[3]]), "the salt must be"),
    ("$".join(HASH.split("$")[:3] + ["c2hvcnQ="]), "the hash must be 32 bytes"),
    ("$".join(HASH.split("$")[:3] + ["not base64!"]), "base64"),
])
def test_the_schema_refuses_malformed_hashes(bad, message):
    with pytest.raises(ValueError, match=message):
        schema.parse_password_hash(bad)
    snap = snapshot([pool(1, [(1, "127.0.0.1", 9)])], [route(1, ["a.test"], 1, access_list=3)])
    snap["access_lists"] = [acl([("alice", bad)])]
    with pytest.raises(schema.SnapshotInvalid) as exc:
        schema.parse_snapshot(snap)
    assert [e.path for e in exc.value.errors] == ["access_lists[0].users[0].password_hash"]


def test_the_schema_checks_usernames_satisfy_and_forward_authorization():
    snap = snapshot([pool(1, [(1, "127.0.0.1", 9)])],
                    [route(1, ["a.test"], 1, access_list=3, forward_authorization=True)])
    snap["access_lists"] = [acl([("alice", HASH), ("bob", HASH)], satisfy="any")]
    parsed = schema.parse_snapshot(snap)
    assert parsed.access_lists[0].satisfy == "any" and parsed.routes[0].forward_authorization
    assert [u.username for u in parsed.access_lists[0].users] == ["alice", "bob"]
    snap["access_lists"] = [acl([("a:b", HASH), ("bob", HASH), ("bob", HASH), ("", HASH)], satisfy="some")]
    with pytest.raises(schema.SnapshotInvalid) as exc:
        schema.parse_snapshot(snap)
    assert {e.path for e in exc.value.errors} == {
        "access_lists[0].users[0].username", "access_lists[0].users[2].username",
        "access_lists[0].users[3].username", "access_lists[0].satisfy"}


def test_credentials_parse_only_basic_with_a_colon():
    assert basicauth.credentials(basic("al", "p:w").encode()) == (b"al", b"p:w")
    assert basicauth.credentials(b"basic " + base64.b64encode(b"al:")) == (b"al", b"")
    assert basicauth.credentials(b"Bearer abc") is None
    assert basicauth.credentials(b"Basic " + base64.b64encode(b"nocolon")) is None
    assert basicauth.credentials(b"Basic !!!") is None


@pytest.fixture
def counted(monkeypatch):
    """Counts the PBKDF2 computations the node makes."""
    calls = []
    real = basicauth.check_password

    def check(password, parsed):
        calls.append(password)
        return real(password, parsed)
    monkeypatch.setattr(basicauth, "check_password", check)
    return calls


async def test_401_then_a_verified_header_is_cached_and_authorization_is_not_forwarded(counted):
    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])],
                    [route(1, ["private.test"], 1, access_list=3),
                     route(2, ["pass.test"], 1, access_list=3, forward_authorization=True)])
    snap["access_lists"] = [acl([("alice", HASH)])]
    proxy = await Proxy(snap).start()
    try:
        r = await get(proxy.port, host="private.test")
        assert r.status == 401
        assert r.one("www-authenticate") == 'Basic realm="staff", charset="UTF-8"'
        assert r.one("proxy-status") == 'switchyard; error=http_request_denied; details="basic auth staff"'
        good = basic("alice", "s3cret pässword")
        c = await Client(proxy.port).connect()
        try:  # a browser: the same header on every request of a keep-alive connection
            for _ in range(5):
                r = await c.request(host="private.test", headers=[("Authorization", good)])
                assert r.status == 200
        finally:
            c.close()
        assert len(counted) == 1  # hashed once; four dictionary lookups after it
        assert all(not req.header("authorization") for req in backend.requests)
        r = await get(proxy.port, host="pass.test", headers=[("Authorization", good)])
        assert r.status == 200 and backend.requests[-1].header("authorization") == [good.encode()]
        assert len(counted) == 1  # same list, same cache
        # a wrong password for a known user, an unknown user: 401 each, both hashed
        for creds in (basic("alice", "nope"), basic("mallory", "s3cret pässword")):
            r = await get(proxy.port, host="private.test", headers=[("Authorization", creds)])
            assert r.status == 401 and r.one("www-authenticate").startswith("Basic realm=")
        assert len(counted) == 3 and len(backend.requests) == 6
    finally:
        await proxy.close()
        await backend.close()


async def test_failures_are_throttled_per_client_without_hashing(counted):
    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])], [route(1, ["private.test"], 1, access_list=3)])
    snap["access_lists"] = [acl([("alice", HASH)], name="ops team")]
    proxy = await Proxy(snap).start()
    try:
        for i in range(basicauth.MAX_FAILURES):
            r = await get(proxy.port, host="private.test", headers=[("Authorization", basic("alice", f"x{i}"))])
            assert r.status == 401
        assert len(counted) == basicauth.MAX_FAILURES
        r = await get(proxy.port, host="private.test", headers=[("Authorization", basic("alice", "s3cret pässword"))])
        assert r.status == 429 and r.one("retry-after") == str(int(basicauth.FAILURE_WINDOW))
        assert 'details="basic auth ops team: too many failed attempts"' in r.one("proxy-status")
        assert len(counted) == basicauth.MAX_FAILURES  # refused without a hash
        assert not backend.requests
    finally:
        await proxy.close()
        await backend.close()


async def test_parallel_requests_with_one_header_share_one_verification(counted):
    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])], [route(1, ["private.test"], 1, access_list=3)])
    snap["access_lists"] = [acl([("alice", HASH)], name="parallel")]
    proxy = await Proxy(snap).start()
    try:
        good = [("Authorization", basic("alice", "s3cret pässword"))]
        rs = await asyncio.gather(*(get(proxy.port, host="private.test", headers=good) for _ in range(6)))
        assert [r.status for r in rs] == [200] * 6
        assert len(counted) == 1 and len(backend.requests) == 6
    finally:
        await proxy.close()
        await backend.close()


async def test_satisfy_all_needs_rules_and_password_satisfy_any_either(counted):
    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])],
                    [route(1, ["all.test"], 1, access_list=3), route(2, ["any.test"], 1, access_list=4),
                     route(3, ["any-out.test"], 1, access_list=5)])
    snap["access_lists"] = [
        acl([("alice", HASH)], name="all", rules=[{"action": "allow", "cidr": "127.0.0.0/8"}], default="deny"),
        {**acl([("alice", HASH)], rules=[{"action": "allow", "cidr": "127.0.0.0/8"}], default="deny",
               satisfy="any"), "id": 4, "name": "inside"},
        {**acl([("alice", HASH)], rules=[{"action": "deny", "cidr": "127.0.0.0/8"}], satisfy="any"),
         "id": 5, "name": "outside"}]
    proxy = await Proxy(snap).start()
    try:
        good = [("Authorization", basic("alice", "s3cret pässword"))]
        assert (await get(proxy.port, host="all.test")).status == 401  # allowed address, no password
        assert (await get(proxy.port, host="all.test", headers=good)).status == 200
        assert (await get(proxy.port, host="any.test")).status == 200  # allowed address is enough
        assert (await get(proxy.port, host="any-out.test")).status == 401  # else the password
        assert (await get(proxy.port, host="any-out.test", headers=good)).status == 200
        assert len(counted) == 2  # one hash per list (each list has its own cache)
    finally:
        await proxy.close()
        await backend.close()


def test_a_list_keeps_its_cache_across_applies_until_its_users_change():
    a = schema.parse_snapshot({**snapshot([pool(1, [(1, "127.0.0.1", 9)])], [route(1, ["a.test"], 1, access_list=3)]),
                               "access_lists": [acl([("alice", HASH)], name="kept")]}).access_lists[0]
    first = basicauth.BasicAuth.of(a)
    first.cache[b"Basic x"] = 1e18
    assert basicauth.BasicAuth.of(a) is first  # kept: a config change elsewhere keeps the cache
    changed = schema.parse_snapshot({**snapshot([pool(1, [(1, "127.0.0.1", 9)])],
                                                [route(1, ["a.test"], 1, access_list=3)]),
                                     "access_lists": [acl([("alice", basicauth.make_hash("new"))],
                                                          name="kept")]}).access_lists[0]
    second = basicauth.BasicAuth.of(changed)
    assert second is not first and not second.cache


def test_the_cache_and_the_failure_table_are_bounded(monkeypatch):
    monkeypatch.setattr(basicauth, "MAX_CLIENTS", 3)
    auth = basicauth.BasicAuth("x", ())
    for i in range(10):
        auth.count_attempt((4, i), 0.0)
    assert len(auth.failures) == 3 and (4, 9) in auth.failures
    assert json.dumps(basicauth.STATS)  # plain counters for the exposition


async def test_over_the_verification_cap_the_node_answers_429_busy_without_hashing(counted, monkeypatch):
    monkeypatch.setattr(basicauth, "MAX_PENDING", 0)
    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])], [route(1, ["private.test"], 1, access_list=3)])
    snap["access_lists"] = [acl([("alice", HASH)], name="capped")]
    proxy = await Proxy(snap).start()
    try:
        r = await get(proxy.port, host="private.test", headers=[("Authorization", basic("alice", "s3cret pässword"))])
        assert r.status == 429 and r.one("retry-after") == "1"
        assert 'details="basic auth capped: busy"' in r.one("proxy-status")
        assert not counted and not backend.requests
    finally:
        await proxy.close()
        await backend.close()


async def test_a_request_that_waits_for_its_hash_counts_once_against_a_rate_limit(counted):
    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])],
                    [route(1, ["private.test"], 1, access_list=3,
                           rate_limit={"rate": 0.001, "burst": 2, "key": "none"})])
    snap["access_lists"] = [acl([("alice", HASH)], name="limited")]
    proxy = await Proxy(snap).start()
    try:
        good = [("Authorization", basic("alice", "s3cret pässword"))]
        statuses = [(await get(proxy.port, host="private.test", headers=good)).status for _ in range(3)]
        assert statuses == [200, 200, 429] and len(counted) == 1
    finally:
        await proxy.close()
        await backend.close()
