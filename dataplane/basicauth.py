"""Basic auth (an access list's users, a route's ``basic_auth``): PBKDF2 hashes made by
the control plane, verified here.

The control plane stores and sends only hashes (``make_hash``; the format is the
snapshot's, ``schema.parse_password_hash``). The node verifies a password with
``hashlib.pbkdf2_hmac`` in a small thread pool (hashlib releases the GIL), never on the
event loop; the request waits meanwhile (its body is held as while connecting). A
successful verification is cached per list (or route), keyed by the exact ``Authorization`` value,
for ``CACHE_TTL`` seconds, so a browser's repeated header costs one dict lookup. Failed
attempts (and attempts still being verified) count per client address; past
``MAX_FAILURES`` in ``FAILURE_WINDOW`` seconds the client gets 429 with Retry-After and no
hash is computed. At most ``MAX_PENDING`` verifications wait or run per process; more get
429 at once.

``BasicAuth`` objects are shared across applies while their list's name (a route's realm)
and users do not change (``BasicAuth.of``), so a config change elsewhere keeps the cache; a
change of the users or name starts a new, empty one. A route with an access list and its
own ``basic_auth`` checks the one Authorization value against both (both must pass).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dataplane import errors, schema, wire

monotonic = time.monotonic

ITERATIONS = 200_000      # about 60 ms per verification on the reference machine
SALT_BYTES = 16
CACHE_TTL = 60.0          # seconds a verified Authorization value is trusted
CACHE_SIZE = 1024         # entries per access list (oldest dropped first)
MAX_FAILURES = 5          # failed (or pending) attempts per client address ...
FAILURE_WINDOW = 60.0     # ... in this many seconds, then 429 without hashing
MAX_CLIENTS = 10_000      # client addresses tracked per access list
MAX_PENDING = 32          # verifications waiting or running per process
THREADS = 2

# what the node did with Authorization values (exposed as switchyard_basic_auth_checks)
STATS = {"ok": 0, "failed": 0, "cached": 0, "throttled": 0, "busy": 0, "missing": 0}
_pool: ThreadPoolExecutor | None = None
_pending = 0
_DUMMY = (ITERATIONS, b"\0" * SALT_BYTES, b"\0" * schema.HASH_BYTES)  # unknown user: same cost


def make_hash(password: str, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """The stored form of ``password`` (UTF-8) with a new random salt."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return "$".join((schema.PASSWORD_HASH_ALGORITHM, str(iterations),
                     base64.b64encode(salt).decode("ascii"), base64.b64encode(digest).decode("ascii")))


def check_password(password: bytes, parsed: tuple[int, bytes, bytes]) -> bool:
    """The slow part (run in the pool): does ``password`` give the stored digest?"""
    iterations, salt, digest = parsed
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha256", password, salt, iterations), digest)


def credentials(value: bytes) -> tuple[bytes, bytes] | None:
    """(username, password) of a ``Basic`` Authorization value, or None."""
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"basic" or not token:
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.partition(b":")
    return (user, password) if sep else None


def _answer(code: str, status: int, detail: str, extra: str) -> errors.Template:
    # ``extra``: the challenge (401) or Retry-After (429), built here from checked parts
    return errors.Template(code, status, "http_request_denied", wire.sf_string(detail).decode("ascii"),
                           extra)


class BasicAuth:
    """The users of one access list or route, their verification cache and failure counts."""

    __slots__ = ("name", "users", "cache", "failures", "waiting", "detail", "unauthorized",
                 "throttled", "busy", "__weakref__")

    _shared: "weakref.WeakValueDictionary[tuple, BasicAuth]" = weakref.WeakValueDictionary()

    @classmethod
    def of(cls, owner: "schema.AccessList | schema.Route") -> "BasicAuth":
        """The BasicAuth of an access list with users (realm: its name) or of a route with
        ``basic_auth`` (its realm): the one already in use while the realm and users are
        the same (cache and failure counts kept), else a new one."""
        if isinstance(owner, schema.Route):
            realm, users, kind = owner.basic_auth.realm, owner.basic_auth.users, "route"
        else:
            realm, users, kind = owner.name, owner.users, "access_list"
        key = (kind, owner.id, realm, users)
        auth = cls._shared.get(key)
        if auth is None:
            auth = cls._shared[key] = cls(realm, users)
        return auth

    def __init__(self, name: str, users: tuple):
        self.name = name
        self.users = {u.username.encode("utf-8"): schema.parse_password_hash(u.password_hash)
                      for u in users}
        self.cache: dict[bytes, float] = {}          # Authorization value -> valid until
        self.failures: dict[Any, list] = {}          # client key -> [count, window start]
        self.waiting: dict[bytes, list] = {}         # value being verified -> exchanges
        self.detail = f"basic auth {name}"
        realm = wire.sf_string(name).decode("ascii")  # inside a quoted string (RFC 9110 5.6.4)
        self.unauthorized = _answer("basic_auth_required", 401, self.detail,
                                    f'WWW-Authenticate: Basic realm="{realm}", charset="UTF-8"\r\n')
        self.throttled = _answer("basic_auth_throttled", 429, self.detail + ": too many failed attempts",
                                 f"Retry-After: {int(FAILURE_WINDOW)}\r\n")
        self.busy = _answer("basic_auth_throttled", 429, self.detail + ": busy", "Retry-After: 1\r\n")

    # ---- the hot path
    def admits(self, ex: Any, route: Any, url: bytes, key: Any) -> bool:
        """True when the request carries a verified Authorization value (a dict lookup);
        otherwise the exchange is answered (401/429) or waits for a verification that
        resumes it with ``ex.forward(route, url)``, and False is returned."""
        value = None
        for h in ex.headers:
            if h[0] == b"authorization":
                if value is not None:  # two of them: neither is trusted
                    value = b""
                    break
                value = h[2]
        if value:
            until = self.cache.get(value)
            if until is not None:
                if until > monotonic():
                    STATS["cached"] += 1
                    return True
                del self.cache[value]
        else:
            STATS["missing"] += 1
            return self.refuse(ex, self.unauthorized)
        waiters = self.waiting.get(value)
        if waiters is not None:  # the same value is being verified: wait for that one
            waiters.append((ex, route, url))
            return False
        now = monotonic()
        count = self.failures.get(key)
        if count is not None:
            if now - count[1] > FAILURE_WINDOW:
                count[0], count[1] = 0, now
            elif count[0] >= MAX_FAILURES:
                STATS["throttled"] += 1
                return self.refuse(ex, self.throttled)
        creds = credentials(value)
        if creds is None:
            return self.failed(ex, key, now)
        global _pending
        if _pending >= MAX_PENDING:
            STATS["busy"] += 1
            return self.refuse(ex, self.busy)
        self.count_attempt(key, now)  # pending attempts count: no burst of parallel guesses
        parsed = self.users.get(creds[0], None)
        _pending += 1
        self.waiting[value] = [(ex, route, url)]
        loop = ex.conn.server.loop
        fut = loop.run_in_executor(_executor(), _verify, creds[1], parsed)
        fut.add_done_callback(lambda f: self.verified(f, value, key))
        return False

    def refuse(self, ex: Any, answer: errors.Template) -> bool:
        ex.detail = answer is self.unauthorized and self.detail or self.detail + " throttled"
        ex.fail(answer.code, template=answer)
        return False

    def failed(self, ex: Any, key: Any, now: float) -> bool:
        self.count_attempt(key, now)
        STATS["failed"] += 1
        return self.refuse(ex, self.unauthorized)

    def count_attempt(self, key: Any, now: float) -> None:
        count = self.failures.get(key)
        if count is None:
            failures = self.failures
            if len(failures) >= MAX_CLIENTS:
                self.forget(now)
            count = failures[key] = [0, now]
        count[0] += 1

    def forget(self, now: float) -> None:
        """Room in the failure table: drop expired windows, else the oldest entry."""
        failures = self.failures
        for k in [k for k, c in failures.items() if now - c[1] > FAILURE_WINDOW]:
            del failures[k]
        if len(failures) >= MAX_CLIENTS:
            del failures[next(iter(failures))]

    def verified(self, fut: Any, value: bytes, key: Any) -> None:
        """Back on the loop: cache a success and resume the waiting requests, or 401."""
        global _pending
        _pending -= 1
        waiters = self.waiting.pop(value, ())
        ok = not fut.cancelled() and fut.exception() is None and fut.result()
        if ok:
            STATS["ok"] += 1
            cache = self.cache
            if len(cache) >= CACHE_SIZE:
                del cache[next(iter(cache))]
            cache[value] = monotonic() + CACHE_TTL
            count = self.failures.get(key)
            if count is not None and count[0] > 0:
                count[0] -= 1  # this attempt was counted while pending: it did not fail
        else:
            STATS["failed"] += 1
        for ex, route, url in waiters:
            if ex.dead or ex.resp_done:
                continue
            if ok:
                ex.forward(route, url)
            else:
                self.refuse(ex, self.unauthorized)


def _verify(password: bytes, parsed: tuple | None) -> bool:
    if parsed is None:  # unknown user: spend the same time, then refuse
        check_password(password, _DUMMY)
        return False
    return check_password(password, parsed)


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="basic-auth")
    return _pool
