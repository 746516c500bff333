"""Test a backend from the proxy host: DNS, TCP, TLS, HTTP — each step timed,
each failure named precisely.

``await probe(url, ...)`` returns a JSON-able dict (the shape below); it never raises
for a network failure. The control plane asks a node to run it (``schema.MSG_PROBE``);
``python -m dataplane probe URL`` runs it from the command line.

    {"url", "scheme", "host", "port", "path", "ok": bool, "error": str|None,
     "failed_step": "url"|"dns"|"policy"|"tcp"|"tls"|"http"|None, "total_ms",
     "dns":    {"ok", "addresses": [ip], "literal": bool, "time_ms", "error"},
     "policy": {"restricted", "allowed": [ip], "refused": [{"address", "reason"}], "ok"},
     "tcp":    {"ok", "address": "ip:port", "time_ms", "error",
                "attempts": [{"address", "time_ms", "error"}]},
     "tls":    {"ok", "time_ms", "version", "cipher", "alpn", "sni", "verify": bool,
                "verified": bool|None, "verify_error", "error",
                "peer": {"subject", "issuer", "not_before", "not_after", "sans"},
                "chain": [{"subject", "issuer", "not_after", "pem"}]} | None (plain http),
     "http":   {"ok", "request": "GET / HTTP/1.1", "status", "reason", "headers": [[name, value]],
                "ttfb_ms", "time_ms", "error"} | None (not reached / not asked)}

The pool's upstream policy (``schema.UpstreamPolicy`` or its dict) is applied to the
resolved addresses exactly as ``upstream.HostPool.connect`` does.
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import json
import socket
import ssl
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from dataplane import schema
from dataplane.tls import client_context
from dataplane.upstream import RESERVED, check_address

USER_AGENT = "switchyard-probe/1"
MAX_HEADERS = 60
MAX_HEAD_BYTES = 64 * 1024
REDACT = frozenset(("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
                    "api-key", "x-auth-token", "x-csrf-token", "x-xsrf-token",
                    "x-amz-security-token", "proxy-authenticate", "www-authenticate"))


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)


URL_HEADERS = frozenset(("referer", "location", "content-location"))


def redact_query(url: str) -> str:
    """``url`` (or a request target) with every query parameter value replaced by
    ``[redacted]``. Names stay (they help and are not secret); any value may be a
    secret (tokens, signatures, OAuth codes), and so is a part without a name."""
    base, sep, query = url.partition("?")
    if not sep:
        return url
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        parts.append(f"{name}=[redacted]" if eq else "[redacted]" if part else part)
    return f"{base}?{'&'.join(parts)}"


def redact(name: str, value: str) -> str:
    """A header value with its secret parts replaced (names of cookies and the auth
    scheme are kept: they help, the secrets do not); URLs lose their query values."""
    low = name.lower()
    if low in URL_HEADERS:
        return redact_query(value)
    if low not in REDACT and not any(w in low for w in ("token", "secret", "password", "apikey")):
        return value
    if low in ("cookie",):
        names = [p.split("=", 1)[0].strip() for p in value.split(";") if p.strip()]
        return "; ".join(f"{n}=[redacted]" for n in names)
    if low == "set-cookie":
        first, _, attrs = value.partition(";")
        return f"{first.split('=', 1)[0].strip()}=[redacted]" + (";" + attrs if attrs else "")
    if low in ("authorization", "proxy-authorization"):
        scheme, _, rest = value.partition(" ")
        if rest:
            return f"{scheme} [redacted, {len(rest)} bytes]"
    if low in ("www-authenticate", "proxy-authenticate"):
        return value  # a challenge holds no secret
    return f"[redacted, {len(value)} bytes]"


def _policy(policy: Any) -> schema.UpstreamPolicy | None:
    if policy is None or isinstance(policy, schema.UpstreamPolicy):
        return policy
    if isinstance(policy, dict):
        nets = []
        for n in policy.get("allowed_networks") or ():
            try:
                nets.append(str(ipaddress.ip_network(n, strict=False)))
            except (TypeError, ValueError):
                continue
        return schema.UpstreamPolicy(restricted=bool(policy.get("restricted")),
                                     allowed_networks=tuple(nets))
    return None


def _forbidden_reason(ip: str, port: int) -> str:
    if RESERVED.forbids(ip, port):
        return f"{ip}:{port} is this proxy or its control plane; no tenant target may use it"
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    for attr, why in (("is_unspecified", "the unspecified address"), ("is_loopback", "loopback"),
                      ("is_link_local", "link-local (cloud metadata)"),
                      ("is_multicast", "multicast"), ("is_private", "a private range"),
                      ("is_reserved", "a reserved range")):
        if getattr(addr, attr):
            return f"{ip} is {why}; the tenant's upstream policy does not allow it"
    return f"{ip} is not allowed by the upstream policy"


def _dns_error(exc: BaseException, host: str) -> str:
    if isinstance(exc, socket.gaierror):
        code = exc.args[0] if exc.args else None
        if code == socket.EAI_NONAME:
            return f"NXDOMAIN: {host} does not resolve ({exc.args[-1]})"
        if code == getattr(socket, "EAI_NODATA", object()):
            return f"NODATA: {host} has no address records"
        if code == socket.EAI_AGAIN:
            return f"temporary DNS failure for {host} (SERVFAIL or no answer): {exc.args[-1]}"
        return f"DNS error for {host}: {exc.args[-1] if exc.args else exc}"
    return f"DNS error for {host}: {exc}"


def _connect_error(exc: BaseException, addr: str, timeout: float) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return (f"connect timeout: no answer from {addr} within {timeout:g} s "
                "(host down, firewall dropping packets, or wrong address)")
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused: nothing is listening on {addr}"
    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0, "")
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return f"unreachable: {addr}: {exc.strerror} ({name})"
        return f"{addr}: {exc.strerror or exc} ({name})" if name else f"{addr}: {exc}"
    return f"{addr}: {type(exc).__name__}: {exc}"


def _name(parts: Any) -> str:
    """getpeercert()-style name tuples → 'CN=x, O=y'."""
    out = []
    short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
             "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST"}
    for rdn in parts or ():
        for key, value in rdn:
            out.append(f"{short.get(key, key)}={value}")
    return ", ".join(out)


def _cert_info(info: dict) -> dict:
    return {"subject": _name(info.get("subject")), "issuer": _name(info.get("issuer")),
            "not_before": info.get("notBefore"), "not_after": info.get("notAfter"),
            "sans": [v for k, v in info.get("subjectAltName", ()) if k in ("DNS", "IP Address")]}


def _chain(sslobj: Any) -> list[dict]:
    """The chain the peer presented (leaf first), verified or not."""
    inner = getattr(sslobj, "_sslobj", sslobj)
    getter = getattr(sslobj, "get_unverified_chain", None) or getattr(inner, "get_unverified_chain", None)
    out = []
    if getter is not None:
        try:
            import _ssl
            for cert in getter() or ():
                info = _cert_info(cert.get_info())
                pem = cert.public_bytes(_ssl.ENCODING_PEM)
                info["pem"] = pem.decode() if isinstance(pem, bytes) else pem
                out.append(info)
            return out
        except Exception:  # noqa: BLE001 - fall back to the leaf alone
            out = []
    der = sslobj.getpeercert(binary_form=True)
    if der:
        out.append({"subject": "", "issuer": "", "not_after": None, "sans": [],
                    "pem": ssl.DER_cert_to_PEM_cert(der)})
    return out


async def _tcp(addr: str, port: int, timeout: float) -> socket.socket:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (addr, port)), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


async def _tls(sock: socket.socket, ctx: ssl.SSLContext, server_name: str, timeout: float):
    """A TLS handshake on ``sock``. ``server_name`` is what the certificate must match; a
    name is also sent as SNI, an IP address is not."""
    return await asyncio.wait_for(asyncio.open_connection(
        sock=sock, ssl=ctx, server_hostname=server_name, ssl_handshake_timeout=timeout), timeout)


async def _http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str,
                target: str, host: str, headers: list, timeout: float) -> dict:
    out: dict[str, Any] = {"ok": False, "request": f"{method} {target} HTTP/1.1", "status": None,
                           "reason": "", "headers": [], "ttfb_ms": None, "time_ms": None,
                           "error": None}
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"User-Agent: {USER_AGENT}",
             "Accept: */*", "Connection: close"]
    names = {"host", "user-agent", "accept", "connection"}
    for name, value in headers:
        if name.lower() in ("host",):
            lines[1] = f"Host: {value}"
            continue
        if name.lower() in names:
            lines = [ln for ln in lines if not ln.lower().startswith(name.lower() + ":")]
        lines.append(f"{name}: {value}")
    t0 = time.perf_counter()
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        first = await asyncio.wait_for(reader.readline(), timeout)
        out["ttfb_ms"] = _ms(t0)
        if not first:
            out["error"] = "the server closed the connection without a response"
            return out
        parts = first.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            out["error"] = f"not an HTTP response: {first[:80]!r}"
            return out
        out["status"] = int(parts[1])
        out["reason"] = parts[2] if len(parts) > 2 else ""
        size = len(first)
        while True:
            line = await asyncio.wait_for(reader.readline(), timeout)
            size += len(line)
            if not line or line in (b"\r\n", b"\n") or size > MAX_HEAD_BYTES:
                break
            name, _, value = line.decode("latin-1").partition(":")
            if len(out["headers"]) < MAX_HEADERS:
                out["headers"].append([name.strip(), redact(name.strip(), value.strip())])
        out["time_ms"] = _ms(t0)
        out["ok"] = True
    except (asyncio.TimeoutError, TimeoutError):
        out["error"] = (f"no response headers within {timeout:g} s after the request was sent "
                        "(the backend is slow or hung)")
    except (ConnectionError, OSError) as exc:
        out["error"] = f"connection lost while waiting for the response: {exc}"
    except ssl.SSLError as exc:
        out["error"] = f"TLS error during the exchange: {exc}"
    return out


class StepFailed(Exception):
    """A probe step failed: ``step`` names it, the message says what happened."""

    def __init__(self, step: str, message: str):
        super().__init__(message)
        self.step = step
        self.message = message


async def probe(url: str, *, timeout: float = 5.0, policy: Any = None, ca_pem: str = "",
                sni: str = "", insecure: bool = False, method: str = "GET",
                headers: list | None = None, host_header: str = "",
                http: bool = True) -> dict:
    """Probe ``url`` step by step; see the module docstring for the result."""
    t_start = time.perf_counter()
    timeout = max(0.05, min(float(timeout), 120.0))
    res: dict[str, Any] = {"url": url, "scheme": None, "host": None, "port": None, "path": None,
                           "ok": False, "error": None, "failed_step": None, "total_ms": None,
                           "dns": None, "policy": None, "tcp": None, "tls": None, "http": None}
    try:
        _url_step(res, url)
        addresses = await _dns_step(res, timeout)
        sock = await _tcp_step(res, _policy_step(res, addresses, policy), timeout)
        reader = writer = None
        try:
            if res["scheme"] == "https":
                reader, writer = await _tls_step(res, sock, sni, insecure, ca_pem, timeout)
            else:
                reader, writer = await asyncio.open_connection(sock=sock)
            if http:
                await _http_step(res, reader, writer, method, list(headers or []), host_header,
                                 timeout)
        finally:
            if writer is not None:
                writer.close()
            else:
                sock.close()
        res["ok"] = True
    except StepFailed as exc:
        res["failed_step"], res["error"] = exc.step, exc.message
    res["total_ms"] = _ms(t_start)
    return res


def _url_step(res: dict, url: str) -> None:
    try:
        u = urlsplit(url)
        scheme = (u.scheme or "").lower()
        host = u.hostname
        port = u.port
    except ValueError as exc:
        raise StepFailed("url", f"invalid URL: {exc}") from None
    if scheme not in ("http", "https") or not host:
        raise StepFailed("url", "expected http://host[:port]/path or https://...")
    res.update(scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80),
               path=(u.path or "/") + (f"?{u.query}" if u.query else ""))


async def _dns_step(res: dict, timeout: float) -> list[str]:
    """The host's addresses (itself when it is an IP address)."""
    host, port = res["host"], res["port"]
    dns: dict[str, Any] = {"ok": False, "addresses": [], "literal": False, "time_ms": 0.0,
                           "error": None}
    res["dns"] = dns
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        dns.update(ok=True, addresses=[host], literal=True)
        return dns["addresses"]
    except ValueError:
        pass
    t0 = time.perf_counter()
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
        dns["addresses"] = list(dict.fromkeys(i[4][0] for i in infos))
        dns["ok"] = bool(dns["addresses"])
    except (asyncio.TimeoutError, TimeoutError):
        dns["error"] = f"DNS lookup of {host} timed out after {timeout:g} s"
    except (socket.gaierror, UnicodeError, OSError) as exc:
        dns["error"] = _dns_error(exc, host)
    dns["time_ms"] = _ms(t0)
    if not dns["ok"]:
        raise StepFailed("dns", dns["error"] or f"{host} has no addresses")
    return dns["addresses"]


def _policy_step(res: dict, addresses: list[str], policy: Any) -> list[str]:
    """The addresses the pool's upstream policy allows (the node's own check)."""
    port = res["port"]
    pol = _policy(policy)
    allowed, refused = [], []
    for a in addresses:
        if check_address(a, port, pol):
            allowed.append(a)
        else:
            refused.append({"address": a, "reason": _forbidden_reason(a, port)})
    res["policy"] = {"restricted": bool(pol and pol.restricted), "allowed": allowed,
                     "refused": refused, "ok": bool(allowed)}
    if not allowed:
        raise StepFailed("policy", "destination_ip_prohibited: "
                         + "; ".join(r["reason"] for r in refused))
    return allowed


async def _tcp_step(res: dict, addresses: list[str], timeout: float) -> socket.socket:
    """A connection to the first address that answers."""
    port = res["port"]
    tcp: dict[str, Any] = {"ok": False, "address": None, "time_ms": None, "error": None,
                           "attempts": []}
    res["tcp"] = tcp
    for a in addresses:
        shown = f"[{a}]:{port}" if ":" in a else f"{a}:{port}"
        t0 = time.perf_counter()
        try:
            sock = await _tcp(a, port, timeout)
        except (asyncio.TimeoutError, TimeoutError, OSError) as exc:
            tcp["attempts"].append({"address": shown, "time_ms": _ms(t0),
                                    "error": _connect_error(exc, shown, timeout)})
            continue
        tcp.update(ok=True, address=shown, time_ms=_ms(t0))
        tcp["attempts"].append({"address": shown, "time_ms": tcp["time_ms"], "error": None})
        return sock
    tcp["error"] = tcp["attempts"][-1]["error"]
    raise StepFailed("tcp", tcp["error"])


async def _tls_step(res: dict, sock: socket.socket, sni: str, insecure: bool, ca_pem: str,
                    timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The TLS handshake on ``sock``; what the server presented, verified or not."""
    server_name = sni or res["host"]  # an IP address is matched but not sent as SNI
    tls: dict[str, Any] = {"ok": False, "time_ms": None, "version": None, "cipher": None,
                           "alpn": None, "sni": sni or (None if res["dns"]["literal"] else
                                                        res["host"]), "verify": not insecure,
                           "verified": None, "verify_error": None, "error": None,
                           "peer": None, "chain": []}
    res["tls"] = tls
    t0 = time.perf_counter()
    try:
        reader, writer = await _tls(sock, client_context(not insecure, ca_pem), server_name,
                                    timeout)
    except ssl.SSLCertVerificationError as exc:
        tls["time_ms"] = _ms(t0)
        tls["verified"] = False
        tls["verify_error"] = f"certificate verify failed: {exc.verify_message}"
        await _unverified_chain(res, server_name, timeout)
        raise StepFailed("tls", tls["verify_error"]) from None
    except (asyncio.TimeoutError, TimeoutError):
        tls["error"] = f"TLS handshake timed out after {timeout:g} s"
    except ssl.SSLError as exc:
        tls["error"] = f"TLS handshake failed: {exc.reason or exc}"
    except (ConnectionError, OSError) as exc:
        tls["error"] = f"connection closed during the TLS handshake (not a TLS server?): {exc}"
    tls["time_ms"] = _ms(t0)
    if tls["error"]:
        raise StepFailed("tls", tls["error"])
    tls["verified"] = (not insecure) or None
    so = writer.get_extra_info("ssl_object")
    tls.update(ok=True, version=so.version(), cipher=(so.cipher() or (None,))[0],
               alpn=so.selected_alpn_protocol())
    _show_chain(tls, so)
    return reader, writer


async def _unverified_chain(res: dict, server_name: str, timeout: float) -> None:
    """What did a server that failed verification present? A second handshake without
    verification tells; if that fails too, the verification error is the answer."""
    tls = res["tls"]
    try:
        sock = await _tcp(res["tcp"]["address"].rsplit(":", 1)[0].strip("[]"), res["port"],
                          timeout)
        _, writer = await _tls(sock, client_context(False, ""), server_name, timeout)
        so = writer.get_extra_info("ssl_object")
        _show_chain(tls, so)
        tls["version"], tls["cipher"] = so.version(), (so.cipher() or (None,))[0]
        writer.close()
    except Exception:  # noqa: BLE001 - the verification error is the answer
        pass


def _show_chain(tls: dict, so: Any) -> None:
    tls["chain"] = _chain(so)
    if tls["chain"]:
        tls["peer"] = {k: v for k, v in tls["chain"][0].items() if k != "pem"}


async def _http_step(res: dict, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     method: str, headers: list, host_header: str, timeout: float) -> None:
    host, port = res["host"], res["port"]
    default_port = 443 if res["scheme"] == "https" else 80
    host_header = host_header or (host if port == default_port else
                                  (f"[{host}]:{port}" if ":" in host else f"{host}:{port}"))
    res["http"] = await _http(reader, writer, method.upper(), res["path"], host_header, headers,
                              timeout)
    if not res["http"]["ok"]:
        raise StepFailed("http", res["http"]["error"])


# ---------------------------------------------------------------- command line

def format_text(r: dict) -> str:
    out = [f"probe {r['url']}"]
    dns = r.get("dns")
    if dns:
        if dns["ok"]:
            how = "literal address" if dns["literal"] else f"{dns['time_ms']:.1f} ms"
            out.append(f"  DNS     ok    {', '.join(dns['addresses'])} ({how})")
        else:
            out.append(f"  DNS     FAIL  {dns['error']} ({dns['time_ms']:.1f} ms)")
    pol = r.get("policy")
    if pol and pol["refused"]:
        for ref in pol["refused"]:
            out.append(f"  policy  REFUSED {ref['reason']}")
    tcp = r.get("tcp")
    if tcp:
        for a in tcp["attempts"]:
            out.append(f"  TCP     {'ok  ' if not a['error'] else 'FAIL'}  "
                       f"{a['address']} ({a['time_ms']:.1f} ms){'' if not a['error'] else ': ' + a['error']}")
    tls = r.get("tls")
    if tls:
        if tls["ok"]:
            ver = ("verified" if tls["verified"] else "NOT verified (--insecure)")
            out.append(f"  TLS     ok    {tls['version']} {tls['cipher']} sni={tls['sni']} {ver} "
                       f"({tls['time_ms']:.1f} ms)")
        else:
            out.append(f"  TLS     FAIL  {tls['verify_error'] or tls['error']}")
        for i, c in enumerate(tls.get("chain") or []):
            out.append(f"          [{i}] subject: {c['subject']}")
            out.append(f"              issuer:  {c['issuer']}   expires: {c['not_after']}")
    http = r.get("http")
    if http:
        if http["ok"]:
            out.append(f"  HTTP    ok    {http['status']} {http['reason']} "
                       f"(first byte {http['ttfb_ms']:.1f} ms)")
            for name, value in http["headers"][:12]:
                out.append(f"          {name}: {value}")
        else:
            out.append(f"  HTTP    FAIL  {http['error']}")
    out.append(("OK" if r["ok"] else f"FAILED at {r['failed_step']}: {r['error']}")
               + (f" (total {r['total_ms']:.1f} ms)" if r.get("total_ms") is not None else ""))
    return "\n".join(out)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m dataplane probe",
                                description="Probe a backend from this host: DNS, TCP connect, "
                                            "TLS handshake and HTTP response, each timed.")
    p.add_argument("url")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per step (default 5)")
    p.add_argument("--insecure", action="store_true", help="do not verify the TLS certificate")
    p.add_argument("--sni", default="", help="TLS server name (default: the URL's host)")
    p.add_argument("--ca-file", default="", help="verify against this CA bundle (PEM) only")
    p.add_argument("--host-header", default="", help="Host header to send")
    p.add_argument("--method", default="GET")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    a = p.parse_args(argv)
    ca_pem = ""
    if a.ca_file:
        with open(a.ca_file) as f:
            ca_pem = f.read()
    result = asyncio.run(probe(a.url, timeout=a.timeout, insecure=a.insecure, sni=a.sni,
                               ca_pem=ca_pem, host_header=a.host_header, method=a.method))
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_text(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
