"""Active health checks: one cheap probe per target, many at once.

Pure asyncio and the standard library (no Django), so the Celery task, the
benchmark and the tests all run exactly this code.

A check opens one connection (TLS when asked), sends a minimal HTTP/1.1 request
with ``Connection: close``, reads only the status line and aborts the connection.
No session, no pooling, no retries: the threshold state machine
(``controlplane.health.state``) is what smooths over a single failed probe.

Every outcome is a ``CheckResult`` with a short, stable reason that tells an
on-call engineer what happened: ``status 503 received``, ``timeout after 2.0s``,
``connection refused``, ``DNS failure: ...``, ``TLS: ...``.
"""
from __future__ import annotations

import asyncio
import errno
import functools
import re
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Union

USER_AGENT = "Switchyard-HealthCheck/1"
MAX_STATUS_LINE = 8192
MAX_INTERIM_RESPONSES = 5

StatusPredicate = Callable[[int], bool]
Expected = Union[str, StatusPredicate]
AddressPolicy = Callable[[str], bool]

_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
_FORBIDDEN_HOST = re.compile(r"[\x00-\x1f\x7f]")
_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?\r?\n$")
_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\]")


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    reason: str
    status: int | None = None
    elapsed: float = 0.0


@dataclass(frozen=True)
class CheckSpec:
    """Everything needed to probe one target; ``type`` is ``http`` or ``tcp``."""
    host: str
    port: int
    type: str = "http"
    path: str = "/"
    method: str = "GET"
    host_header: str = ""
    expected: Expected = "200-399"
    timeout: float = 2.0
    tls: bool = False
    verify: bool = True
    sni: str = ""
    ca_pem: str = ""
    # For tenant pools: may the check connect to this resolved IP? (the same
    # upstream policy as the data plane, checked on the address actually used.)
    policy: AddressPolicy | None = None


# ---------------------------------------------------------------- expected statuses

def parse_expected(text: str) -> StatusPredicate:
    """``"200-399,404"`` -> a predicate on the status code. ValueError when malformed."""
    ranges: list[tuple[int, int]] = []
    for part in str(text).replace(" ", "").split(","):
        m = re.fullmatch(r"(\d{3})(?:-(\d{3}))?", part)
        if not m:
            raise ValueError(f"expected statuses {text!r}: {part!r} is not NNN or NNN-NNN")
        low = int(m.group(1))
        high = int(m.group(2)) if m.group(2) else low
        if not (100 <= low <= high <= 599):
            raise ValueError(f"expected statuses {text!r}: {part!r} is not a range within 100-599")
        ranges.append((low, high))
    frozen = tuple(ranges)

    def predicate(status: int) -> bool:
        return any(low <= status <= high for low, high in frozen)

    predicate.ranges = frozen  # type: ignore[attr-defined]
    return predicate


@functools.lru_cache(maxsize=256)
def _cached_expected(text: str) -> StatusPredicate:
    return parse_expected(text)


def _predicate(expected: Expected) -> StatusPredicate:
    return _cached_expected(expected) if isinstance(expected, str) else expected


# ---------------------------------------------------------------- TLS

@functools.lru_cache(maxsize=64)
def client_ssl_context(verify: bool = True, ca_pem: str = "") -> ssl.SSLContext:
    """One context per (verify, CA bundle): contexts are costly, handshakes are not."""
    ctx = ssl.create_default_context()
    if ca_pem:
        ctx.load_verify_locations(cadata=ca_pem)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


# ---------------------------------------------------------------- checks

def default_host_header(host: str, port: int, tls: bool) -> str:
    name = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return name if port == (443 if tls else 80) else f"{name}:{port}"


def _ssl_args(host: str, tls: bool, verify: bool, sni: str, ca_pem: str) -> dict:
    if not tls:
        return {}
    return {"ssl": client_ssl_context(bool(verify), ca_pem or ""),
            "server_hostname": sni or host.strip("[]")}


async def _connect(host: str, port: int, *, tls: bool, verify: bool, sni: str, ca_pem: str,
                   policy: AddressPolicy | None, limit: int = 2 ** 16):
    host = host.strip("[]")
    ssl_args = _ssl_args(host, tls, verify, sni, ca_pem)
    if policy is None:
        return await asyncio.open_connection(host, port, limit=limit, **ssl_args)
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    allowed = [a for a in addresses if policy(a)]
    if not allowed:
        raise _PolicyDenied(", ".join(addresses[:3]) or host)
    last: BaseException | None = None
    for address in allowed:
        try:
            return await asyncio.open_connection(address, port, limit=limit, **ssl_args)
        except (ConnectionRefusedError, ConnectionResetError, OSError) as exc:
            if isinstance(exc, ssl.SSLError):
                raise
            last = exc
    raise last  # type: ignore[misc]


class _PolicyDenied(Exception):
    pass


async def check_http(host: str, port: int, *, path: str = "/", method: str = "GET",
                     host_header: str = "", expected: Expected = "200-399",
                     timeout: float = 2.0, tls: bool = False, verify: bool = True,
                     sni: str = "", ca_pem: str = "",
                     policy: AddressPolicy | None = None) -> CheckResult:
    """Send one HTTP/1.1 request and judge the status line. Never raises."""
    started = time.monotonic()
    try:
        predicate = _predicate(expected)
        if not path.startswith("/") or _FORBIDDEN.search(path):
            raise ValueError(f"invalid check path {path!r}")
        if _FORBIDDEN.search(method) or not method:
            raise ValueError(f"invalid check method {method!r}")
        host_header = host_header or default_host_header(host, port, tls)
        if _FORBIDDEN_HOST.search(host_header):
            raise ValueError("invalid Host header for the check")
    except ValueError as exc:
        return CheckResult(False, f"invalid check: {exc}", None, 0.0)

    request = (f"{method} {path} HTTP/1.1\r\nHost: {host_header}\r\n"
               f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n\r\n").encode("latin-1")
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await _connect(host, port, tls=tls, verify=verify, sni=sni,
                                            ca_pem=ca_pem, policy=policy, limit=MAX_STATUS_LINE)
            writer.write(request)
            status = await _read_status(reader)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - classified, never propagated
        return CheckResult(False, classify_error(exc, timeout), None, time.monotonic() - started)
    finally:
        _abort(writer)
    elapsed = time.monotonic() - started
    return CheckResult(bool(predicate(status)), f"status {status} received", status, elapsed)


async def check_tcp(host: str, port: int, *, timeout: float = 2.0, tls: bool = False,
                    verify: bool = True, sni: str = "", ca_pem: str = "",
                    policy: AddressPolicy | None = None) -> CheckResult:
    """Connect (and handshake when ``tls``), then hang up. Never raises."""
    started = time.monotonic()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await _connect(host, port, tls=tls, verify=verify, sni=sni,
                                             ca_pem=ca_pem, policy=policy)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - classified, never propagated
        return CheckResult(False, classify_error(exc, timeout), None, time.monotonic() - started)
    finally:
        _abort(writer)
    return CheckResult(True, "TLS handshake completed" if tls else "connected", None,
                       time.monotonic() - started)


async def _read_status(reader: asyncio.StreamReader) -> int:
    for _ in range(MAX_INTERIM_RESPONSES + 1):
        line = await reader.readline()
        if not line:
            raise EOFError("connection closed before a response")
        if not line.endswith(b"\n"):
            raise EOFError("connection closed in the status line")
        m = _STATUS_LINE.match(line)
        if not m:
            raise _BadResponse(f"bad status line {line[:60]!r}")
        status = int(m.group(1))
        if 100 <= status < 200 and status != 101:
            # Interim response (100 Continue, 103 Early Hints): skip its headers.
            while True:
                header = await reader.readline()
                if not header.endswith(b"\n"):
                    raise EOFError("connection closed in an interim response")
                if header in (b"\r\n", b"\n"):
                    break
            continue
        return status
    raise _BadResponse("too many interim responses")


class _BadResponse(Exception):
    pass


def _abort(writer) -> None:
    if writer is not None:
        try:
            writer.transport.abort()
        except Exception:  # noqa: BLE001
            pass


def classify_error(exc: BaseException, timeout: float) -> str:
    """A short, stable reason for a failed check."""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return f"timeout after {float(timeout)}s"
    if isinstance(exc, _PolicyDenied):
        return f"address not allowed by the upstream policy: {exc}"
    if isinstance(exc, socket.gaierror):
        return f"DNS failure: {exc.strerror or exc}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message or exc.reason or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, (EOFError, asyncio.IncompleteReadError)):
        return str(exc) or "connection closed before a response"
    if isinstance(exc, (_BadResponse, asyncio.LimitOverrunError, ValueError)):
        if isinstance(exc, ValueError) and "Separator" in str(exc):
            return "invalid HTTP response: status line too long"
        return f"invalid HTTP response: {exc}"
    if isinstance(exc, OSError):
        if exc.errno is None and str(exc).startswith("Multiple exceptions"):
            codes = {int(c) for c in _ERRNO_IN_TEXT.findall(str(exc))}
            if codes == {errno.ECONNREFUSED}:
                return "connection refused"
        if exc.errno == errno.ECONNREFUSED:
            return "connection refused"
        return f"connection failed: {exc.strerror or exc}"
    return f"check failed: {type(exc).__name__}: {exc}"


async def run_check(spec: CheckSpec) -> CheckResult:
    if spec.type == "tcp":
        return await check_tcp(spec.host, spec.port, timeout=spec.timeout, tls=spec.tls,
                               verify=spec.verify, sni=spec.sni, ca_pem=spec.ca_pem,
                               policy=spec.policy)
    return await check_http(spec.host, spec.port, path=spec.path, method=spec.method,
                            host_header=spec.host_header, expected=spec.expected,
                            timeout=spec.timeout, tls=spec.tls, verify=spec.verify,
                            sni=spec.sni, ca_pem=spec.ca_pem, policy=spec.policy)


async def run_checks(specs: Iterable[CheckSpec], concurrency: int = 200) -> list[CheckResult]:
    """Run every check, at most ``concurrency`` at a time; results in input order."""
    specs = list(specs)
    if not specs:
        return []
    semaphore = asyncio.Semaphore(max(1, int(concurrency)))

    async def one(spec: CheckSpec) -> CheckResult:
        async with semaphore:
            try:
                return await run_check(spec)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug must not lose the round
                return CheckResult(False, f"check failed: {type(exc).__name__}: {exc}", None, 0.0)

    return list(await asyncio.gather(*(one(s) for s in specs)))
