"""Where a tenant's upstream targets may point. Pure functions; Django only
for the setting that names the reserved endpoints.

A tenant target may not reach loopback, link-local (cloud metadata included),
private or special ranges, the unspecified address or multicast — whatever the
spelling (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``,
``[::ffff:127.0.0.1]``) and, for a name, whatever address it resolves to — unless
the address lies in one of the tenant's ``allowed_networks``. Platform pools are not
restricted. The data plane checks again on every connect (DNS rebinding).

The control plane and the proxy themselves are never a tenant's target, allowed
network or not: ``settings.SWITCHYARD_RESERVED_ENDPOINTS`` (the control plane's and
the local node's listeners) are refused here; every node refuses its own listeners
and its control plane on connect (``dataplane.upstream.RESERVED``).
"""
from __future__ import annotations

import ipaddress
import re
import socket
from typing import Callable, Iterable

from dataplane.upstream import ReservedEndpoints

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
_NUMERIC_PART = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)
LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells, in any notation a resolver accepts; None for a name.

    Raises ValueError for something that looks numeric but is no address (``1.2.3.999``).
    """
    text = host.strip().rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        return ipaddress.IPv6Address(text.split("%", 1)[0])
    parts = text.split(".")
    if not text or not all(_NUMERIC_PART.match(p) for p in parts):
        return None
    return _inet_aton(parts)


def _inet_aton(parts: list[str]) -> ipaddress.IPv4Address:
    """inet_aton(3): 1 to 4 parts, each decimal, octal (leading 0) or hex (0x)."""
    if len(parts) > 4:
        raise ValueError(f"{'.'.join(parts)} is not a valid IPv4 address")
    values = [_part_value(p) for p in parts]
    last_bits = 8 * (5 - len(values))
    if any(v > 255 for v in values[:-1]) or values[-1] >= 1 << last_bits:
        raise ValueError(f"{'.'.join(parts)} is not a valid IPv4 address")
    number = 0
    for v in values[:-1]:
        number = number << 8 | v
    return ipaddress.IPv4Address(number << last_bits | values[-1])


def _part_value(part: str) -> int:
    low = part.lower()
    if low.startswith("0x"):
        return int(low[2:] or "0", 16)
    if len(low) > 1 and low.startswith("0"):
        return int(low, 8)
    return int(low)


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, Teredo, NAT64)."""
    if ip.version == 4:
        return None
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    if ip in NAT64_PREFIX or (int(ip) >> 32 == 0 and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def forbidden_reason(ip: IPAddress) -> str:
    """Why a tenant may not connect to ``ip``; empty when it may."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        reason = forbidden_reason(inner)
        return f"{reason} (IPv4 {inner} embedded)" if reason else ""
    for attr, reason in (("is_unspecified", "the unspecified address"), ("is_loopback", "a loopback address"),
                         ("is_link_local", "a link-local address (cloud metadata)"),
                         ("is_multicast", "a multicast address"), ("is_private", "a private address"),
                         ("is_reserved", "a reserved address")):
        if getattr(ip, attr):
            return reason
    return "" if ip.is_global else "a special-purpose address"


def _in_networks(ip: IPAddress, networks: Iterable[str]) -> bool:
    candidates = [ip] + ([embedded_ipv4(ip)] if embedded_ipv4(ip) else [])
    for net in networks:
        network = ipaddress.ip_network(net, strict=False)
        if any(c.version == network.version and c in network for c in candidates):
            return True
    return False


def resolve(host: str) -> list[IPAddress]:
    """Every address ``host`` resolves to (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    return sorted({ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos},
                  key=lambda a: (a.version, int(a)))


def reserved_endpoints() -> ReservedEndpoints:
    from django.conf import settings

    reserved = ReservedEndpoints()
    reserved.reserve(settings.SWITCHYARD_RESERVED_ENDPOINTS)
    return reserved


def check_target(host: str, allowed_networks: Iterable[str] = (),
                 resolver: Callable[[str], list[IPAddress]] = resolve, port: int | None = None) -> list[str]:
    """Problems with a tenant target ``host`` (on ``port``, when given, which is checked
    against the reserved endpoints); an empty list means it is allowed.

    A name that does not resolve now is accepted: there is nothing to check yet and
    the data plane refuses forbidden addresses at connect time.
    """
    allowed = list(allowed_networks)
    try:
        literal = parse_ip_literal(host)
    except ValueError as exc:
        return [str(exc)]
    name = host.lower().rstrip(".")
    if literal is None and (name in LOCAL_NAMES or name.endswith(".localhost")):
        return [f"{host} is a loopback name; tenant targets may not use it"]
    addresses = [literal] if literal is not None else resolver(host)
    reserved = reserved_endpoints() if isinstance(port, int) else None
    problems = []
    for ip in addresses:
        reason = forbidden_reason(ip)
        if reason and not _in_networks(ip, allowed):
            problems.append(f"{_spelled(host, literal, ip)} {reason}; tenant targets may not use it "
                            "unless the platform allows that network")
        if reserved is not None and reserved.forbids(str(ip), port):
            where = f"{host}:{port}" if str(ip) == host else f"{host}:{port} ({ip})"
            problems.append(f"{where} is the control plane or a proxy listener; no tenant target may use it")
    return problems


def _spelled(host: str, literal: IPAddress | None, ip: IPAddress) -> str:
    if literal is None:
        return f"{host} resolves to {ip},"
    return f"{host} is" if str(ip) == host else f"{host} means {ip},"


def invalid_networks(networks: Iterable) -> list[str]:
    """Entries of an ``allowed_networks`` list that are not CIDR networks."""
    bad = []
    for net in networks:
        try:
            ipaddress.ip_network(net, strict=False)
        except (TypeError, ValueError):
            bad.append(repr(net))
    return bad
