"""Access lists compiled into sorted intervals (dataplane.policies), the snapshot's
access_lists section, and the node's 403 / maintenance 503 on the wire (in-process proxy)."""
import ipaddress
import json
import random

import pytest

from dataplane import policies, schema
from tests.dataplane.helpers import Backend, Proxy, get, pool, route, snapshot


def gate(rules, default="allow", name="office"):
    return policies.AccessGate(1, name, rules, default)


def allowed(g, ip):
    return g.allows(policies.address_key(ip))


def naive(rules, default, ip):
    addr = ipaddress.ip_address(ip)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    for action, cidr in rules:
        net = ipaddress.ip_network(cidr, strict=False)
        if net.version == addr.version and addr in net:
            return action == "allow"
    return default == "allow"


def test_first_match_wins_and_the_default_decides_the_rest():
    g = gate([("deny", "10.0.0.5/32"), ("allow", "10.0.0.0/8"), ("deny", "10.1.0.0/16")], default="deny")
    assert not allowed(g, "10.0.0.5")
    assert allowed(g, "10.0.0.4") and allowed(g, "10.0.0.6") and allowed(g, "10.255.255.255")
    assert allowed(g, "10.1.2.3")  # the earlier allow of 10/8 wins over the later deny
    assert not allowed(g, "9.255.255.255") and not allowed(g, "11.0.0.0") and not allowed(g, "0.0.0.0")
    assert not allowed(g, "255.255.255.255")


def test_ipv6_rules_apply_to_ipv6_clients_only():
    g = gate([("deny", "::1/128"), ("allow", "2001:db8::/32"), ("deny", "0.0.0.0/0")], default="deny")
    assert not allowed(g, "::1")
    assert allowed(g, "2001:db8::1") and allowed(g, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")
    assert not allowed(g, "2001:db9::") and not allowed(g, "127.0.0.1")
    g = gate([("deny", "::1/128")], default="allow")
    assert allowed(g, "127.0.0.1") and not allowed(g, "::1") and allowed(g, "::2")


def test_an_ipv4_mapped_client_is_matched_by_ipv4_rules():
    g = gate([("allow", "127.0.0.0/8")], default="deny")
    assert allowed(g, "::ffff:127.0.0.1") and not allowed(g, "::ffff:128.0.0.1")


def test_an_empty_list_is_its_default_and_adjacent_intervals_merge():
    assert allowed(gate([], "allow"), "1.2.3.4") and not allowed(gate([], "deny"), "::1")
    g = gate([("allow", "10.0.0.0/9"), ("allow", "10.128.0.0/9")], default="deny")
    assert g.v4.starts == [0, int(ipaddress.ip_address("10.0.0.0")), int(ipaddress.ip_address("11.0.0.0"))]
    assert g.v4.allowed == [False, True, False]


def test_a_random_list_agrees_with_checking_the_rules_one_by_one():
    rnd = random.Random(17)
    rules = []
    for _ in range(100):
        if rnd.random() < 0.7:
            rules.append((rnd.choice(("allow", "deny")),
                          f"{rnd.choice((10, 172, 192))}.{rnd.randrange(4)}.{rnd.randrange(256)}.0/{rnd.randrange(8, 33)}"))
        else:
            rules.append((rnd.choice(("allow", "deny")), f"2001:db8:{rnd.randrange(4):x}::/{rnd.randrange(32, 129)}"))
    for default in ("allow", "deny"):
        g = gate(rules, default)
        for _ in range(3000):
            if rnd.random() < 0.7:
                ip = f"{rnd.choice((10, 172, 192, 8))}.{rnd.randrange(4)}.{rnd.randrange(256)}.{rnd.randrange(256)}"
            else:
                ip = f"2001:db8:{rnd.randrange(5):x}::{rnd.randrange(1 << 16):x}"
            assert allowed(g, ip) == naive(rules, default, ip), ip
        # the partition: sorted, starting at 0, no two neighbours with the same decision
        for table in (g.v4, g.v6):
            assert table.starts[0] == 0 and table.starts == sorted(set(table.starts))
            assert all(a != b for a, b in zip(table.allowed, table.allowed[1:]))


def test_the_client_behind_trusted_proxies_is_the_rightmost_untrusted_address():
    trusted = {"10.0.0.1", "10.0.0.2"}.__contains__
    peer = policies.address_key("10.0.0.1")
    assert policies.forwarded_client(b"203.0.113.7", peer, trusted) == policies.address_key("203.0.113.7")
    assert policies.forwarded_client(b"1.1.1.1, 203.0.113.7, 10.0.0.2", peer, trusted) == \
        policies.address_key("203.0.113.7")
    assert policies.forwarded_client(b"2001:db8::5", peer, trusted) == policies.address_key("2001:db8::5")
    assert policies.forwarded_client(b"garbage, 10.0.0.2", peer, trusted) == policies.address_key("10.0.0.2")


def test_the_schema_checks_access_lists_and_route_references():
    base = {"pools": [pool(1, [(1, "127.0.0.1", 9)])],
            "routes": [route(1, ["a.test"], 1, access_list=5)],
            "access_lists": [{"id": 5, "name": "office", "tenant": None,
                              "rules": [{"action": "allow", "cidr": "10.0.0.1/8"}], "default": "deny"}]}
    snap = schema.parse_snapshot(base)
    assert snap.access_lists[0].rules == (schema.AccessRule("allow", "10.0.0.0/8"),)
    assert snap.routes[0].access_list == 5
    bad = json.loads(json.dumps(base))
    bad["access_lists"][0]["rules"].append({"action": "maybe", "cidr": "300.1.1.1"})
    bad["access_lists"][0]["name"] = 'x"y'
    with pytest.raises(schema.SnapshotInvalid) as exc:
        schema.parse_snapshot(bad)
    assert {e.path for e in exc.value.errors} == {
        "access_lists[0].rules[1].action", "access_lists[0].rules[1].cidr", "access_lists[0].name"}
    missing = json.loads(json.dumps(base))
    missing["routes"][0]["access_list"] = 6
    with pytest.raises(schema.SnapshotInvalid) as exc:
        schema.parse_snapshot(missing)
    assert [e.path for e in exc.value.errors] == ["routes[0].access_list"]


async def test_the_node_refuses_with_403_and_answers_maintenance_without_the_pool():
    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])],
                    [route(1, ["denied.test"], 1, access_list=7),
                     route(2, ["open.test"], 1, access_list=8),
                     route(3, ["down.test"], 1, maintenance=True, retry_after=90)])
    snap["access_lists"] = [
        {"id": 7, "name": "office net", "tenant": None, "rules": [{"action": "deny", "cidr": "127.0.0.0/8"}]},
        {"id": 8, "name": "loopback", "tenant": None, "rules": [{"action": "allow", "cidr": "127.0.0.1"}],
         "default": "deny"}]
    proxy = await Proxy(snap).start()
    try:
        r = await get(proxy.port, host="denied.test")
        assert r.status == 403
        assert r.one("proxy-status") == 'switchyard; error=http_request_denied; details="access list office net"'
        assert (await get(proxy.port, host="open.test")).status == 200
        r = await get(proxy.port, host="down.test")
        assert r.status == 503 and r.one("retry-after") == "90"
        assert r.one("proxy-status") == 'switchyard; error=destination_unavailable; details="maintenance"'
        assert r.one("content-type").startswith("text/html") and b"maintenance" in r.body
        r = await get(proxy.port, host="down.test", headers=[("Accept", "application/json")])
        assert r.status == 503 and json.loads(r.body)["error"] == "maintenance"
        assert len(backend.requests) == 1  # only open.test reached the backend
    finally:
        await proxy.close()
        await backend.close()
