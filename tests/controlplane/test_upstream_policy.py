"""The tenant upstream address policy, pure functions."""
import ipaddress

import pytest

from controlplane.tenancy import upstream_policy as policy

LOOPBACK_SPELLINGS = ["127.0.0.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001", "127.1",
                      "0x7f.1", "017700000001", "127.0.0.1.", "[::ffff:127.0.0.1]", "::ffff:7f00:1",
                      "::1", "[::1]", "::7f00:1", "2002:7f00:1::1"]
FORBIDDEN = ["169.254.169.254", "fe80::1%eth0", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1",
             "0.0.0.0", "[::]", "224.0.0.1", "ff02::1", "240.0.0.1", "255.255.255.255", "fd00::1",
             "64:ff9b::a9fe:a9fe", "198.18.0.1"]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_it_reads_every_spelling_of_loopback(host):
    problems = policy.check_target(host)
    assert problems and "loopback" in problems[0]


@pytest.mark.parametrize("host", FORBIDDEN)
def test_it_refuses_special_ranges(host):
    assert policy.check_target(host), host


@pytest.mark.parametrize("host", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "[2606:4700::1111]"])
def test_it_allows_global_addresses(host):
    assert policy.check_target(host) == []


def test_it_names_the_cloud_metadata_address():
    assert "link-local" in policy.check_target("169.254.169.254")[0]


def test_it_allows_a_forbidden_address_inside_allowed_networks():
    assert policy.check_target("10.1.2.3", ["10.0.0.0/8"]) == []
    assert policy.check_target("0x0a.1.2.3", ["10.0.0.0/8"]) == []
    assert policy.check_target("[::ffff:10.1.2.3]", ["10.0.0.0/8"]) == []
    assert policy.check_target("10.1.2.3", ["192.168.0.0/16"])


def test_it_checks_every_address_a_name_resolves_to():
    answers = [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.7")]
    problems = policy.check_target("app.example.net", resolver=lambda host: answers)
    assert problems == ["app.example.net resolves to 10.0.0.7, a private address; tenant targets may not "
                        "use it unless the platform allows that network"]


def test_it_resolves_names_with_getaddrinfo(monkeypatch):
    def fake(host, port, proto=0):
        return [(2, 1, 6, "", ("169.254.169.254", 0)), (10, 1, 6, "", ("2606:4700::1111", 0, 0, 0))]
    monkeypatch.setattr(policy.socket, "getaddrinfo", fake)
    problems = policy.check_target("metadata.example.net")
    assert len(problems) == 1 and "169.254.169.254" in problems[0]


def test_it_refuses_loopback_names_without_resolving():
    def boom(host):
        raise AssertionError("resolved")
    assert policy.check_target("localhost", resolver=boom)
    assert policy.check_target("api.LOCALHOST.", resolver=boom)


def test_it_accepts_a_name_that_does_not_resolve_yet():
    assert policy.check_target("not-yet.example.net", resolver=lambda host: []) == []


def test_it_refuses_malformed_numeric_addresses():
    assert policy.check_target("1.2.3.999") == ["1.2.3.999 is not a valid IPv4 address"]
    assert policy.check_target("1.2.3.4.5")


def test_it_lists_invalid_networks():
    assert policy.invalid_networks(["10.0.0.0/8", "nope", "::1/128"]) == ["'nope'"]
