"""dataplane.applier.check_snapshot: the node's own build run as the control plane's
gate. Whatever a node would refuse is refused with the snapshot path
of the value; a snapshot it accepts is applied by a real NodeState."""
import pytest
import trustme

from dataplane import schema
from dataplane.applier import NodeState, check_snapshot
from tests.dataplane.helpers import pool, route, snapshot


def base(pool_kw=None, route_kw=None, certificates=()) -> dict:
    snap = snapshot([pool(1, [(1, "10.0.0.1", 80)], **(pool_kw or {}))],
                    [route(1, ["a.test"], 1, **(route_kw or {}))])
    snap["certificates"] = list(certificates)
    return snap


def refusal(snap: dict) -> dict[str, str]:
    with pytest.raises(schema.SnapshotInvalid) as exc:
        check_snapshot(snap)
    return {e.path: e.message for e in exc.value.errors}


def cert_entry(cid: int, cert_pem: str, key_pem: str, name: str = "c") -> dict:
    return {"id": cid, "name": name, "tenant": None, "hosts": ["a.test"], "certificate_pem": cert_pem,
            "fingerprint": "f", "private_key_pem": key_pem}


def leaf(ca: trustme.CA, *names: str) -> tuple[str, str]:
    cert = ca.issue_cert(*names)
    return cert.cert_chain_pems[0].bytes().decode(), cert.private_key_pem.bytes().decode()


def test_a_snapshot_the_gate_passes_is_applied_by_a_node():
    ca = trustme.CA()
    pem, key = leaf(ca, "a.test")
    snap = base({"sticky_cookie": "sy", "tls": {"enabled": True, "ca_pem": ca.cert_pem.bytes().decode()}},
                {"path": "^/img/[a-z]+\\.png$", "path_type": "regex",
                 "response_headers": {"set": [{"name": "X-Served-By", "value": "edge 1\tblue"}]}},
                [cert_entry(1, pem, key)])
    check_snapshot(snap)
    assert NodeState().apply(1, "h", snap) >= 0


@pytest.mark.parametrize("value", ["5\u20ac", "a\x0bb", "a\x7f", "a\r\nX-Injected: 1", "a\x00"])
def test_it_names_the_header_value_no_wire_can_carry(value):
    snap = base(route_kw={"response_headers": {"set": [{"name": "X-N", "value": "ok"},
                                                       {"name": "X-M", "value": value}]}})
    errors = refusal(snap)
    assert list(errors) == ["routes[0].response_headers.set[1].value"]
    assert "visible US-ASCII" in errors["routes[0].response_headers.set[1].value"]


def test_it_names_a_ca_bundle_the_node_cannot_load():
    snap = base({"tls": {"enabled": True, "verify": True, "ca_pem": "-----BEGIN CERTIFICATE-----\nnope\n"}})
    assert list(refusal(snap)) == ["pools[0].tls.ca_pem"]
    snap = base({"tls": {"enabled": True, "verify": True, "ca_pem": "caf\xe9"}})
    assert list(refusal(snap)) == ["pools[0].tls.ca_pem"]


def test_it_names_a_certificate_whose_key_does_not_load():
    ca = trustme.CA()
    pem, _ = leaf(ca, "a.test")
    _, other_key = leaf(ca, "b.test")
    good_pem, good_key = leaf(ca, "a.test")
    snap = base(certificates=[cert_entry(1, good_pem, good_key, "good"), cert_entry(2, pem, other_key, "bad")])
    errors = refusal(snap)
    assert list(errors) == ["certificates[1].certificate_pem"]
    assert "mismatch" in errors["certificates[1].certificate_pem"].lower()
    # a node serves the rest and logs the one it could not load; only the gate refuses
    assert NodeState().apply(1, "h", snap) >= 0


def test_it_names_a_certificate_without_its_key():
    ca = trustme.CA()
    pem, _ = leaf(ca, "a.test")
    assert refusal(base(certificates=[cert_entry(1, pem, "")])) == {
        "certificates[0].certificate_pem": "no private key on the wire"}


@pytest.mark.parametrize("cookie", ["s=1\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK", "a;b", "a b"])
def test_it_names_a_sticky_cookie_that_is_not_a_cookie_name(cookie):
    errors = refusal(base({"sticky_cookie": cookie}))
    assert list(errors) == ["pools[0].sticky_cookie"] and "cookie name" in errors["pools[0].sticky_cookie"]


@pytest.mark.parametrize("hash_on, key", [("header", "X User"), ("cookie", "sid=1")])
def test_it_names_a_hash_key_that_is_not_a_header_or_cookie_name(hash_on, key):
    snap = base({"algorithm": "consistent_hash", "hash_on": hash_on, "hash_key": key})
    assert list(refusal(snap)) == ["pools[0].hash_key"]


@pytest.mark.parametrize("field, value, path", [
    ("tls", {"enabled": True, "sni": "api.internal\r\n"}, "pools[0].tls.sni"),
    ("health_check", {"host": "a.test\x0b"}, "pools[0].health_check.host"),
    ("health_check", {"path": "/health\x7f"}, "pools[0].health_check.path"),
])
def test_it_names_other_strings_a_node_writes_to_sockets(field, value, path):
    assert list(refusal(base({field: value}))) == [path]


def test_it_names_header_matches_and_hosts_that_no_request_could_carry():
    snap = base(route_kw={"headers": [{"name": "X-Canary", "value": "yes\x0b"}]})
    assert list(refusal(snap)) == ["routes[0].headers[0].value"]
    snap = base()
    snap["routes"][0]["hosts"] = ["a.test", "bad\x0bhost.test"]
    assert list(refusal(snap)) == ["routes[0].hosts[1]"]


@pytest.mark.parametrize("pattern", ["^/(a)\\1$", "^/(?=admin)", "^/(?!public)", "(?<=x)y"])
def test_it_names_a_regex_re2_does_not_support(pattern):
    errors = refusal(base(route_kw={"path": pattern, "path_type": "regex"}))
    assert list(errors) == ["routes[0].path"]
    assert "RE2" in errors["routes[0].path"] and "lookaround" in errors["routes[0].path"]


def test_checking_leaves_a_running_node_untouched():
    node = NodeState()
    good = base()
    node.apply(1, "h1", good)
    tables, routes = node.tables, dict(node.metrics.routes)
    check_snapshot(base(route_kw={"name": "other"}))
    with pytest.raises(schema.SnapshotInvalid):
        check_snapshot(base({"tls": {"enabled": True, "ca_pem": "garbage"}}))
    assert node.tables is tables and node.version == 1 and node.metrics.routes == routes
