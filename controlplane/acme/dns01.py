"""DNS-01 through RFC 2136 dynamic updates (dnspython), TSIG-signed.

The TXT record of a name goes to ``_acme-challenge.<name>`` when that lies inside the
configured zone. Otherwise it goes to ``<name>.<zone>``, and the name's owner delegates
once with ``_acme-challenge.<name> CNAME <name>.<zone>.``: the CA follows the CNAME into
the zone Switchyard updates, and nobody hands over the credentials of their own DNS.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
from django.conf import settings

from .client import AcmeFailure

TTL = 60
TIMEOUT = 10.0
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class DnsSettings:
    server: str
    zone: str
    port: int = 53
    tsig_name: str = ""
    tsig_secret: str = ""
    tsig_algorithm: str = "hmac-sha256"


def configured() -> DnsSettings | None:
    """The operator's RFC 2136 settings, or None when DNS-01 is not set up."""
    server, zone = settings.SWITCHYARD_ACME_DNS_SERVER.strip(), settings.SWITCHYARD_ACME_DNS_ZONE.strip()
    if not server or not zone:
        return None
    host, port = split_server(server)
    return DnsSettings(host, zone.rstrip(".") + ".", port, settings.SWITCHYARD_ACME_DNS_TSIG_NAME,
                       settings.SWITCHYARD_ACME_DNS_TSIG_SECRET, settings.SWITCHYARD_ACME_DNS_TSIG_ALGORITHM)


def split_server(server: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address -> (host, port)."""
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if server.count(":") == 1:
        host, port = server.split(":")
        return host, int(port)
    return server, 53


def record_name(host: str, zone: str) -> str:
    """Where the TXT record of ``host`` (a name or ``*.`` wildcard) is written."""
    base = host[2:] if host.startswith("*.") else host
    direct = dns.name.from_text(f"_acme-challenge.{base}")
    origin = dns.name.from_text(zone)
    if direct.is_subdomain(origin):
        return direct.to_text()
    return dns.name.from_text(base, origin=origin).to_text()


def _address(config: DnsSettings) -> str:
    try:
        return socket.getaddrinfo(config.server, config.port, type=socket.SOCK_STREAM)[0][4][0]
    except OSError as exc:
        raise AcmeFailure(f"DNS-01: cannot resolve the DNS server {config.server}: {exc}") from None


def _update(config: DnsSettings) -> dns.update.UpdateMessage:
    if config.tsig_name:
        keyring = dns.tsigkeyring.from_text({config.tsig_name: config.tsig_secret})
        return dns.update.UpdateMessage(config.zone, keyring=keyring, keyname=config.tsig_name,
                                        keyalgorithm=config.tsig_algorithm)
    return dns.update.UpdateMessage(config.zone)


def _send(config: DnsSettings, update: dns.update.UpdateMessage, what: str) -> None:
    try:
        response = dns.query.tcp(update, _address(config), port=config.port, timeout=TIMEOUT)
    except (dns.exception.DNSException, OSError, ValueError) as exc:
        raise AcmeFailure(f"DNS-01: the update ({what}) to {config.server}:{config.port} failed: "
                          f"{exc or type(exc).__name__}") from None
    if response.rcode() != dns.rcode.NOERROR:
        raise AcmeFailure(f"DNS-01: {config.server}:{config.port} refused the update ({what}): "
                          f"{dns.rcode.to_text(response.rcode())}")


def add(config: DnsSettings, records: list[tuple[str, str]]) -> None:
    """Add the TXT ``(name, value)`` records in one signed update."""
    update = _update(config)
    for name, value in records:
        update.add(dns.name.from_text(name), TTL, dns.rdatatype.TXT, f'"{value}"')
    _send(config, update, "add " + ", ".join(name for name, _ in records))


def remove(config: DnsSettings, records: list[tuple[str, str]]) -> None:
    """Delete exactly these TXT records (others at the same names stay)."""
    update = _update(config)
    for name, value in records:
        update.delete(dns.name.from_text(name), dns.rdatatype.TXT, f'"{value}"')
    _send(config, update, "remove " + ", ".join(name for name, _ in records))


def _values(config: DnsSettings, name: str) -> set[str]:
    query = dns.message.make_query(name, dns.rdatatype.TXT)
    response = dns.query.tcp(query, _address(config), port=config.port, timeout=TIMEOUT)
    found = set()
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.TXT:
            found.update(b"".join(r.strings).decode() for r in rrset)
    return found


def wait_visible(config: DnsSettings, records: list[tuple[str, str]], timeout: float) -> None:
    """Until the server answers every record (it is what the CA will ask), else AcmeFailure."""
    deadline = time.monotonic() + timeout
    missing = list(records)
    while True:
        try:
            missing = [(n, v) for n, v in missing if v not in _values(config, n)]
        except (dns.exception.DNSException, OSError) as exc:
            raise AcmeFailure(f"DNS-01: cannot query {config.server}:{config.port}: {exc}") from None
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise AcmeFailure(f"DNS-01: {config.server} does not answer the TXT record of "
                              f"{', '.join(n for n, _ in missing)} within {timeout:g} s")
        time.sleep(POLL_SECONDS)
