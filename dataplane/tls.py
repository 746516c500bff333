"""TLS: server contexts per certificate, the SNI table, upstream client contexts.

Everything here runs at apply time. ``CertTable`` is part of the immutable ``Tables``;
the listener context's ``sni_callback`` reads ``state.tables.certs`` on each handshake,
so a config apply swaps certificates for new connections while established ones keep
the context they negotiated. Contexts are cached by content across applies, so an
apply only loads certificates that changed. A host's TLS-ALPN-01 challenge certificate
(``tables.acme.tls_alpn01``) is chosen by the same callback, only for a handshake whose
ClientHello offers acme-tls/1 (``HelloReader``).
"""
from __future__ import annotations

import hashlib
import os
import ssl
import sys
import tempfile
from typing import Any, Iterable

from dataplane import acme
from dataplane.ondemand import UNKNOWN as UNKNOWN_SNI
from dataplane.accesslog import NO_TLS as NO_TLS_LOG

# Mozilla "intermediate" (TLS 1.2 part; TLS 1.3 suites are OpenSSL's defaults, which match).
MOZILLA_INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)
# RFC 7919 ffdhe2048, as Mozilla's configuration generator recommends for the DHE suites.
FFDHE2048 = b"""-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""
HANDSHAKE_TIMEOUT = 10.0
SNI_ATTR = "switchyard_sni"  # set on the SSLObject by the SNI callback


class CertEntry:
    """One loaded certificate as the listener needs it."""

    __slots__ = ("id", "name", "tenant", "hosts", "context", "fingerprint")

    def __init__(self, cert: Any, context: "ServerContext"):
        self.id = cert.id
        self.name = cert.name
        self.tenant = cert.tenant
        self.hosts = cert.hosts
        self.fingerprint = cert.fingerprint
        self.context = context


class ServerContext(ssl.SSLContext):
    """An SSLContext that knows its certificate (``entry``), so a connection can tell,
    after the handshake, which certificate (and tenant) its SNI selected."""

    entry: CertEntry | None = None


def _with_file(data: bytes, use: Any) -> Any:
    """Call ``use(path)`` with ``data`` in a private file that never outlives the call:
    a memfd where the kernel has them, else a 0600 temp file unlinked afterwards."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("switchyard-tls", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            return use(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
    fd, path = tempfile.mkstemp(prefix="switchyard-tls-")  # created 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return use(path)
    finally:
        os.unlink(path)


def _no_password() -> bytes:
    raise ValueError("encrypted private keys are not supported")


def harden(ctx: ssl.SSLContext) -> None:
    """TLS 1.2 and 1.3 only, Mozilla intermediate suites, no compression/renegotiation."""
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(MOZILLA_INTERMEDIATE_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.set_alpn_protocols(["http/1.1"])


def _load_dh(ctx: ssl.SSLContext) -> None:
    try:
        _with_file(FFDHE2048, ctx.load_dh_params)
    except (ssl.SSLError, OSError, ValueError):  # the DHE suites are simply not offered
        pass


def server_context(cert_pem: str, key_pem: str) -> ServerContext:
    """A hardened server context holding one certificate chain and its key.
    Raises ssl.SSLError / ValueError when the pair does not load."""
    if not key_pem:
        raise ValueError("no private key")
    ctx = ServerContext(ssl.PROTOCOL_TLS_SERVER)
    harden(ctx)
    ctx.options |= ssl.OP_SINGLE_DH_USE | ssl.OP_SINGLE_ECDH_USE
    _load_dh(ctx)
    data = (cert_pem.strip() + "\n" + key_pem.strip() + "\n").encode()
    _with_file(data, lambda path: ctx.load_cert_chain(path, password=_no_password))
    return ctx


def challenge_context(cert_pem: str, key_pem: str) -> ServerContext:
    """The context of a TLS-ALPN-01 challenge: its certificate, ALPN acme-tls/1 only."""
    ctx = server_context(cert_pem, key_pem)
    ctx.set_alpn_protocols([acme.ACME_TLS_ALPN])
    return ctx


def check_certificate(cert_pem: str) -> bool:
    """True when ``cert_pem`` holds certificates OpenSSL loads; raises ssl.SSLError."""
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cadata=cert_pem)
    return True


UNSERVED = object()  # the owner of a name that no route serves


def _host_owners(routes: Iterable[Any]) -> tuple[dict, dict]:
    """Route host -> the tenant slug owning it (None: the platform), exact hosts and
    wildcard suffixes apart, as the router keys them. A host that routes of several
    owners share counts as the platform's, so no tenant's certificate serves it."""
    exact: dict[str, str | None] = {}
    wildcard: dict[str, str | None] = {}
    for r in routes:
        for host in r.hosts:
            table, key = (wildcard, host[2:]) if host.startswith("*.") else (exact, host)
            table[key] = r.tenant if table.get(key, r.tenant) == r.tenant else None
    return exact, wildcard


class CertTable:
    """SNI -> certificate, scoped by owner, so that no certificate of one owner is
    ever presented for another owner's host.

    A name belongs to the owner of the routes serving it (exact host, then the longest
    wildcard suffix, as the router matches). Candidates: that owner's certificates
    (exact, then a one-label wildcard; ties go to the lowest id), then the platform's,
    then the default when it is the platform's or that owner's. A name no route
    serves gets a platform certificate or the default."""

    __slots__ = ("by_owner", "owner_exact", "owner_wildcard", "default", "entries", "errors")

    def __init__(self, entries: Iterable[CertEntry] = (), routes: Iterable[Any] = (),
                 default: CertEntry | None = None, errors: tuple = ()):
        self.entries = tuple(entries)
        self.by_owner: dict[str | None, tuple[dict, dict]] = {}
        for e in self.entries:
            exact, wildcard = self.by_owner.setdefault(e.tenant, ({}, {}))
            for host in e.hosts:
                if host.startswith("*."):
                    wildcard.setdefault(host[2:], e)
                else:
                    exact.setdefault(host, e)
        self.owner_exact, self.owner_wildcard = _host_owners(routes)
        self.default = default
        self.errors = errors  # (certificate name, message) of certificates not loaded

    def owner_of(self, name: str) -> Any:
        """The tenant slug (None: the platform) whose routes serve ``name``, or UNSERVED."""
        owner = self.owner_exact.get(name, UNSERVED)
        if owner is not UNSERVED or not self.owner_wildcard:
            return owner
        i = name.find(".")
        while i >= 0:  # longest suffix first, as dataplane.router matches
            owner = self.owner_wildcard.get(name[i + 1:], UNSERVED)
            if owner is not UNSERVED:
                return owner
            i = name.find(".", i + 1)
        return UNSERVED

    def _of_owner(self, owner: Any, name: str) -> CertEntry | None:
        certs = self.by_owner.get(owner)
        if certs is None:
            return None
        exact, wildcard = certs
        e = exact.get(name)
        if e is None and wildcard:
            i = name.find(".")
            if i > 0:
                e = wildcard.get(name[i + 1:])
        return e

    def _choose(self, owner: Any, name: str) -> CertEntry | None:
        """The owner's certificate for ``name``, else the platform's."""
        return self._of_owner(owner, name) or self._of_owner(None, name)

    def for_host(self, name: str) -> CertEntry | None:
        """The certificate a handshake for ``name`` (normalised) gets, without the default."""
        return self._choose(self.owner_of(name), name)

    def lookup(self, server_name: str | None) -> CertEntry | None:
        default = self.default
        if not server_name:
            return default
        owner = self.owner_of(server_name)
        e = self._choose(owner, server_name)
        if e is not None:
            return e
        if default is not None and (owner is UNSERVED or default.tenant in (None, owner)):
            return default
        return None


EMPTY = CertTable()


class TLSCache:
    """Contexts kept across applies, keyed by content; pruned to what the last apply used."""

    def __init__(self) -> None:
        self.server: dict[str, ServerContext] = {}
        self.client: dict[tuple, ssl.SSLContext] = {}
        self.challenge: dict[tuple, ServerContext] = {}

    def build_certs(self, certs: Iterable[Any], routes: Iterable[Any],
                    default_name: str = "") -> CertTable:
        """The SNI table of ``certs`` for the hosts of ``routes`` (see CertTable)."""
        entries: list[CertEntry] = []
        errors = []
        used: dict[str, ServerContext] = {}
        for c in certs:
            if not c.private_key_pem:
                errors.append((c.name, "no private key on the wire"))
                continue
            key = hashlib.sha256(
                (c.certificate_pem + "\0" + c.private_key_pem).encode()).hexdigest()
            ctx = used.get(key) or self.server.get(key)
            if ctx is None:
                try:
                    ctx = server_context(c.certificate_pem, c.private_key_pem)
                except (ssl.SSLError, ValueError, OSError) as exc:
                    errors.append((c.name, str(exc)))
                    continue
            if ctx.entry is not None and ctx.entry.id != c.id:
                # same material under another certificate id: own context for its tenant
                try:
                    ctx = server_context(c.certificate_pem, c.private_key_pem)
                except (ssl.SSLError, ValueError, OSError) as exc:
                    errors.append((c.name, str(exc)))
                    continue
            entry = CertEntry(c, ctx)
            ctx.entry = entry  # the newest description of this certificate
            used[key] = ctx
            entries.append(entry)
        self.server = used
        default = None
        if default_name:
            default = next((e for e in entries if e.name == default_name), None)
        if default is None:
            default = next((e for e in entries if e.tenant is None), None)
        for name, msg in errors:
            print(f"switchyard: certificate {name!r} not loaded: {msg}", file=sys.stderr)
        return CertTable(entries, routes, default, tuple(errors))

    def challenge_context(self, cert_pem: str, key_pem: str, used: dict) -> ServerContext:
        """The (cached) context of one TLS-ALPN-01 challenge, recorded in ``used``."""
        key = (cert_pem, key_pem)
        ctx = used.get(key) or self.challenge.get(key) or challenge_context(cert_pem, key_pem)
        used[key] = ctx
        return ctx

    def client_context(self, verify: bool, ca_pem: str) -> ssl.SSLContext:
        key = (verify, ca_pem)
        ctx = self.client.get(key)
        if ctx is None:
            ctx = self.client[key] = client_context(verify, ca_pem)
        return ctx

    def prune_clients(self, keep: set) -> None:
        self.client = {k: v for k, v in self.client.items() if k in keep}


def client_context(verify: bool, ca_pem: str) -> ssl.SSLContext:
    """Upstream TLS: verification on by default (system CAs, or ``ca_pem`` only)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    if verify:
        if ca_pem.strip():
            ctx.load_verify_locations(cadata=ca_pem)
        else:
            ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class HelloReader(ssl.SSLObject):
    """A listener connection that reads the ClientHello's ALPN offer before OpenSSL
    does: the SNI callback, where the certificate is chosen, cannot see that offer, and
    a TLS-ALPN-01 certificate may only go to a handshake that offers acme-tls/1.

    ``hello_bio`` is the connection's incoming BIO while challenges are pending and the
    ClientHello is not complete. Until the ClientHello is complete OpenSSL consumes
    every byte it is given, so the bytes pending at each handshake step are new: they
    are read, kept, and written back unchanged for OpenSSL."""

    hello_bio: ssl.MemoryBIO | None = None
    hello = b""
    acme_offered = False

    def do_handshake(self) -> None:
        if self.hello_bio is not None:
            self._read_hello(self.hello_bio)
        super().do_handshake()

    def _read_hello(self, bio: ssl.MemoryBIO) -> None:
        data = bio.read()
        if data:
            try:
                bio.write(data)
            except ssl.SSLError:  # the client already ended its side: the handshake fails
                self.hello_bio = None
                return
            self.hello += data
        offered = acme.offers_acme_tls(self.hello)
        if offered is not None:
            self.acme_offered = offered
            self.hello_bio = None
            self.hello = b""


class ListenerContext(ssl.SSLContext):
    """The HTTPS listener's context: connections are ``HelloReader``s, reading the
    ClientHello only while the current tables hold TLS-ALPN-01 challenges."""

    sslobject_class = HelloReader
    state: Any = None

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
                 server_hostname: str | None = None, session: Any = None) -> HelloReader:
        obj = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        if self.state.tables.acme.tls_alpn01:
            obj.hello_bio = incoming
        return obj


def listener_context(state: Any) -> ssl.SSLContext:
    """The HTTPS listener's context: it holds no certificate itself; the SNI callback
    switches each handshake to the certificate the current tables choose, or to a
    host's TLS-ALPN-01 challenge certificate when the handshake offers acme-tls/1."""
    ctx = ListenerContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.state = state
    harden(ctx)

    def sni_callback(sslobj: Any, server_name: str | None, _ctx: Any) -> int | None:
        name = server_name.lower().rstrip(".") if server_name else None
        try:
            setattr(sslobj, SNI_ATTR, name)
        except AttributeError:
            pass
        if getattr(sslobj, "acme_offered", False):
            challenge = state.tables.acme.tls_alpn01.get(name)
            if challenge is not None:
                sslobj.context = challenge
                return None
        certs = state.tables.certs
        entry = certs.lookup(name)
        if name and (entry is None or entry is certs.default):
            UNKNOWN_SNI.note(certs, name)  # on-demand TLS: reported, this handshake does not wait
        if entry is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sslobj.context = entry.context
        return None

    ctx.sni_callback = sni_callback
    return ctx


def connection_info(transport: Any) -> tuple[CertEntry | None, str]:
    """After the handshake: the certificate chosen and the access-log fragment.
    A TLS-ALPN-01 validation handshake (acme-tls/1 negotiated) carries no application
    data: its connection is closed here."""
    from json.encoder import encode_basestring as q
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return None, NO_TLS_LOG
    if sslobj.selected_alpn_protocol() == acme.ACME_TLS_ALPN:
        transport.close()
    entry = getattr(sslobj.context, "entry", None)
    version = sslobj.version()
    sni = getattr(sslobj, SNI_ATTR, None)
    return entry, (f'"tls_version":{q(version) if version else "null"},'
                   f'"sni":{q(sni) if sni else "null"}')
