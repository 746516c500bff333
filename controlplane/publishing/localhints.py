"""Cross-process hints for embedded mode (the in-memory channel layer).

``channels.layers.InMemoryChannelLayer`` only reaches consumers of the process that
sends. In embedded mode a config change or a health transition is often stored by
another process (the Celery worker, a ``manage.py`` command, a script calling the
service layer), so its group message would never reach the Daphne process that holds
the data-plane connections. This module bridges that gap on one host:

* **Sender** (``forward``, called by ``notify``): besides the in-process
  ``group_send``, the same small JSON message (``{"type": "config.changed"}``,
  ``{"type": "health.changed", "targets": {...}}``, ``{"type": "traffic.updated"}``)
  goes as one datagram to a Unix datagram socket in the Linux abstract namespace,
  ``@switchyard-hints-<hash>``, named from a hash of the embedded database (the
  SQLite file's real path), so installations with different var dirs never cross.
  The send is non-blocking and a missing or busy receiver is ignored: hints are
  at-most-once by design. A process that runs the receiver itself skips the
  datagram (its own ``group_send`` already delivered the hint).
* **Receiver** (``ensure_receiver``, called when the first data-plane or live
  consumer connects): binds that address in the Daphne process, reads datagrams on
  the event loop, treats them as untrusted bytes (size cap; the sender's uid, which the
  kernel reports with ``SO_PASSCRED``, must be Daphne's own or root's, since abstract
  sockets have no file permissions; a JSON object of a known type with well-formed
  fields and nothing else)
  and re-sends each valid one with ``group_send`` on the local in-memory layer to
  ``hints.DATAPLANE_GROUP`` (config/health) or ``hints.LIVE_GROUP`` (traffic).
  Datagrams sent by its own process are ignored. If another process already holds the
  address (a second Daphne on the same database), this is logged once at info level
  and that process relies on polling; binding is retried at the next connect after
  ``RETRY_BIND_SECONDS``.

Nothing here is needed for correctness: the consumers still poll the database every
``SWITCHYARD_POLL_SECONDS`` and answer every heartbeat from it. With a channel layer
that already crosses processes (channels_redis) the bridge is off.
"""
from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import socket
import struct
import sys
import time

from django.conf import settings

from controlplane.publishing import hints

log = logging.getLogger("switchyard.hints")

# A datagram larger than this is not sent (the DB poll covers it) and dropped on receipt.
MAX_DATAGRAM = 64 * 1024
MAX_TARGETS = 10_000
MAX_TARGET_ID_LEN = 20
# Datagrams handled per wake-up before yielding to the loop, and hints being delivered at once.
READ_BATCH = 64
MAX_PENDING = 1000
# After a failed bind (address held by another process), try again at a later connect.
RETRY_BIND_SECONDS = 30.0
ADDRESS_PREFIX = "switchyard-hints-"

_CREDS = struct.Struct("iII")  # struct ucred: pid, uid, gid
SUPPORTED = sys.platform.startswith("linux") and hasattr(socket, "SO_PASSCRED") \
    and hasattr(socket, "AF_UNIX")


# ---------------------------------------------------------------- address

def address_for(db: dict) -> str | None:
    """The abstract socket address (leading NUL) for a ``DATABASES`` entry; None for an
    in-memory database (no other process can share it, e.g. pytest's test database)."""
    name = str(db.get("NAME") or "")
    engine = str(db.get("ENGINE") or "")
    if not name or name == ":memory:" or "mode=memory" in name:
        return None
    if "sqlite" in engine:
        key = "sqlite:" + os.path.realpath(name[5:].split("?", 1)[0] if name.startswith("file:") else name)
    else:  # e.g. PostgreSQL without Redis: the same database on the same server
        key = f"{engine}:{db.get('HOST') or ''}:{db.get('PORT') or ''}:{name}"
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return "\0" + ADDRESS_PREFIX + digest


def current_address() -> str | None:
    return address_for(settings.DATABASES.get("default") or {})


def bridged(layer) -> bool:
    """True when ``layer`` cannot carry messages between processes (the in-memory layer)."""
    if not SUPPORTED or layer is None:
        return False
    from channels.layers import InMemoryChannelLayer

    return isinstance(layer, InMemoryChannelLayer)


# ---------------------------------------------------------------- the message format

def parse(data) -> tuple[str, dict] | None:
    """(group, message) for a well-formed hint datagram, else None. ``data`` is untrusted."""
    if not isinstance(data, (bytes, bytearray)) or not data or len(data) > MAX_DATAGRAM:
        return None
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(obj, dict):
        return None
    kind = obj.get("type")
    if kind == hints.CONFIG_CHANGED and obj.keys() == {"type"}:
        return hints.DATAPLANE_GROUP, {"type": hints.CONFIG_CHANGED}
    if kind == hints.TRAFFIC_UPDATED and obj.keys() == {"type"}:
        return hints.LIVE_GROUP, {"type": hints.TRAFFIC_UPDATED}
    if kind == hints.HEALTH_CHANGED and obj.keys() == {"type", "targets"}:
        targets = obj["targets"]
        if not isinstance(targets, dict) or not targets or len(targets) > MAX_TARGETS:
            return None
        for key, value in targets.items():
            if not (isinstance(value, bool) and 0 < len(key) <= MAX_TARGET_ID_LEN
                    and key.isascii() and key.isdigit()):
                return None
        return hints.DATAPLANE_GROUP, {"type": hints.HEALTH_CHANGED, "targets": dict(targets)}
    return None


def encode(message: dict) -> bytes | None:
    """The datagram for ``message``, or None if the receiver would not accept it."""
    try:
        data = json.dumps(message, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        return None
    return data if parse(data) is not None else None


# ---------------------------------------------------------------- sender

def forward(message: dict, layer, address: str | None = None) -> None:
    """Send ``message`` to this installation's receiving process, if the layer needs it.

    Never raises and never blocks: an absent receiver (ECONNREFUSED), a full one
    (EAGAIN: more than ``net.unix.max_dgram_qlen`` hints queued, which the consumers'
    coalescing would merge anyway) or a message it would refuse costs only this hint.
    ``address`` defaults to the one of the configured database.
    """
    try:
        if not bridged(layer):
            return
        address = address or current_address()
        if address is None:
            return
        receiver = _receiver
        if receiver is not None and receiver.serves(address):
            return  # this process receives: its own group_send already delivered the hint
        data = encode(message)
        if data is None:
            log.debug("hints: not forwarding %r (too large or not a known hint)", message.get("type"))
            return
        send_datagram(address, data)
    except Exception:  # a hint must never fail the caller
        log.debug("hints: forwarding failed", exc_info=True)


def send_datagram(address: str, data: bytes) -> bool:
    """One non-blocking datagram; False when nobody took it (no receiver, buffer full)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        sock.sendto(data, address)
        return True
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.EAGAIN, errno.EWOULDBLOCK,
                             errno.ENOBUFS):
            log.debug("hints: datagram not sent: %s", exc)
        return False
    finally:
        sock.close()


# ---------------------------------------------------------------- receiver

class HintReceiver:
    """The receiving end, bound to ``address`` and read on one event loop."""

    def __init__(self, address: str):
        self.address = address
        self.pid = os.getpid()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sock: socket.socket | None = None
        self.closed = False
        self.delivered = 0
        self.dropped = 0
        self.ignored_own = 0
        self._tasks: set[asyncio.Task] = set()
        self._warned_malformed = False
        self._warned_foreign = False

    def start(self, loop: asyncio.AbstractEventLoop) -> "HintReceiver":
        """Bind and start reading; raises OSError (EADDRINUSE: another process holds it)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.bind(self.address)
            loop.add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self.sock, self.loop = sock, loop
        return self

    def serves(self, address: str) -> bool:
        return (not self.closed and self.sock is not None and self.address == address
                and self.pid == os.getpid())

    def running_on(self, loop) -> bool:
        return self.serves(self.address) and self.loop is loop and not loop.is_closed()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.sock is not None:
            try:
                if self.loop is not None and not self.loop.is_closed():
                    self.loop.remove_reader(self.sock.fileno())
            except Exception:  # noqa: BLE001
                pass
            self.sock.close()
        for task in self._tasks:
            task.cancel()

    def _readable(self) -> None:
        for _ in range(READ_BATCH):
            try:
                data, ancdata, flags, _addr = self.sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(_CREDS.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("hints: reading the hint socket failed: %s", exc)
                return
            try:
                self._handle(data, ancdata, flags)
            except Exception:  # one bad datagram must not stop the receiver
                self.dropped += 1
                log.exception("hints: handling a datagram failed")

    def _handle(self, data: bytes, ancdata, flags: int) -> None:
        pid = uid = None
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= _CREDS.size:
                pid, uid, _gid = _CREDS.unpack_from(payload)
        if uid is None or uid not in (os.getuid(), 0):
            self.dropped += 1
            if not self._warned_foreign:
                self._warned_foreign = True
                log.warning("hints: dropped a datagram from uid %s (only uid %s and root may send hints)",
                            uid, os.getuid())
            return
        if pid == os.getpid():
            self.ignored_own += 1  # delivered in-process already
            return
        parsed = None if flags & socket.MSG_TRUNC else parse(data)
        if parsed is None or len(self._tasks) >= MAX_PENDING:
            self.dropped += 1
            if not self._warned_malformed:
                self._warned_malformed = True
                log.warning("hints: dropped a malformed or excess hint datagram (%d bytes from pid %s); "
                            "further ones are logged at debug level", len(data), pid)
            else:
                log.debug("hints: dropped a datagram (%d bytes from pid %s)", len(data), pid)
            return
        group, message = parsed
        task = self.loop.create_task(self._deliver(group, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, group: str, message: dict) -> None:
        from channels.layers import get_channel_layer

        try:
            layer = get_channel_layer()
            if layer is not None:
                await layer.group_send(group, message)
                self.delivered += 1
        except Exception:
            log.exception("hints: delivering a %s hint failed", message.get("type"))


_receiver: HintReceiver | None = None
_retry_at: float | None = None
_logged_in_use = False


def ensure_receiver(layer, address: str | None = None) -> HintReceiver | None:
    """Start this process's receiver once (call from the event loop, e.g. on connect).

    Cheap once running. Returns the receiver, or None (not embedded mode, in-memory
    database, or the address held by another process). ``address`` defaults to the
    one of the configured database.
    """
    global _receiver, _retry_at, _logged_in_use
    try:
        if not bridged(layer):
            return None
        address = address or current_address()
        if address is None:
            return None
        loop = asyncio.get_running_loop()
        current = _receiver
        if current is not None:
            if current.running_on(loop) and current.address == address:
                return current
            current.close()  # another loop (tests), another database, or a forked child
            _receiver = None
        now = time.monotonic()
        if _retry_at is not None and now < _retry_at:
            return None
        try:
            receiver = HintReceiver(address).start(loop)
        except OSError as exc:
            _retry_at = now + RETRY_BIND_SECONDS
            if exc.errno == errno.EADDRINUSE:
                if not _logged_in_use:
                    _logged_in_use = True
                    log.info("hints: another process on this database already receives cross-process "
                             "hints (@%s); this one relies on polling (SWITCHYARD_POLL_SECONDS)",
                             address[1:])
            else:
                log.warning("hints: cannot bind @%s (%s); relying on polling", address[1:], exc)
            return None
        _retry_at = None
        _receiver = receiver
        log.info("hints: receiving cross-process hints on @%s", address[1:])
        return receiver
    except Exception:  # the bridge is an optimisation; never fail a connect
        log.exception("hints: starting the receiver failed")
        return None
