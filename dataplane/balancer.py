"""Load balancing over a pool's live targets.

Every algorithm is a ``Balancer`` subclass registered in ``ALGORITHMS`` under the
schema's algorithm name. ``pick`` receives the request (for hashing algorithms and
sticky sessions) and the targets already tried (retries go to a different target);
``refresh`` is called after health, state or ejection changes and precomputes
everything a pick needs (live tuple, cumulative weights, hash ring), so the pick
itself is O(1) or O(log n).

A target is *live* when it is ``enabled`` (not ``disabled`` or ``draining``), healthy
by the active checks, has a weight above 0 and is not ejected by passive outlier
detection (see ``dataplane.outlier``). Ejections expire without timers: a balancer
remembers the earliest ejection end and refreshes on the first pick after it.
Draining targets get no new requests; in-flight requests keep the target object
they started with and finish normally.

The request passed to ``pick`` is duck-typed (``forwarder.Exchange``): it needs
``conn.client_b`` (client address bytes), ``headers`` (``[(lower name, name,
value)]``) and a writable ``set_cookie`` (bytes or None) for sticky sessions.
"""
from __future__ import annotations

import hashlib
import random as _random
import time
from bisect import bisect_left, bisect_right
from itertools import accumulate
from typing import Any, Iterable

from dataplane import wire

monotonic = time.monotonic

VNODES = 160             # ring points per target of average weight (as ketama)
EXACT_LEAST_CONN = 16    # up to this many live targets least_conn scans exactly


class TargetState:
    """A target at run time. ``healthy`` is set from the control plane's checks;
    ``outlier`` is the passive-health record shared across applies (outlier.py)."""

    __slots__ = ("id", "host", "port", "weight", "state", "healthy", "current",
                 "active", "hostpool", "addr", "host_header", "outlier", "sticky_id")

    def __init__(self, target: Any, hostpool: Any = None, healthy: bool = True,
                 outlier: Any = None):
        self.id = target.id
        self.host = target.host
        self.port = target.port
        self.weight = target.weight
        self.state = target.state
        self.healthy = healthy
        self.current = 0  # smooth weighted round robin's running weight
        self.active = 0
        self.hostpool = hostpool
        self.outlier = outlier
        host = f"[{target.host}]" if ":" in target.host else target.host
        self.addr = f"{host}:{target.port}"
        self.host_header = f"Host: {self.addr}\r\n".encode()
        self.sticky_id = b""

    @property
    def ejected_until(self) -> float:
        o = self.outlier
        return o.until if o is not None else 0.0

    def is_live(self, now: float) -> bool:
        return (self.state == "enabled" and self.healthy and self.weight > 0
                and self.ejected_until <= now)

    @property
    def live(self) -> bool:
        return self.is_live(monotonic())


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def sticky_id(pool_id: int, t: TargetState) -> bytes:
    """An opaque, stable id for a target in a pool: the same on every node and worker,
    reveals neither the address nor the database id."""
    raw = f"switchyard-sticky:{pool_id}:{t.id}:{t.host}:{t.port}".encode()
    return hashlib.blake2b(raw, digest_size=9).hexdigest().encode()


def header_value(headers: list, lname: bytes) -> bytes | None:
    for h in headers:
        if h[0] == lname:
            return h[2]
    return None


def cookie_value(headers: list, name: bytes) -> bytes | None:
    """The value of cookie ``name`` in the request's Cookie header(s), or None."""
    for h in headers:
        if h[0] != b"cookie":
            continue
        value = h[2]
        if name not in value:
            continue
        for part in value.split(b";"):
            k, sep, v = part.strip().partition(b"=")
            if sep and k == name:
                return v.strip().strip(b'"')
    return None


class Balancer:
    """Interface: subclasses implement ``pick`` and may extend ``refresh``."""

    algorithm = ""

    def __init__(self, pool: Any, targets: Iterable[TargetState]):
        self.pool = pool
        self.targets = tuple(targets)
        self.live: tuple[TargetState, ...] = ()
        self.next_expiry = 0.0  # earliest ejection end among this pool's targets
        self.refresh()

    def refresh(self) -> None:
        now = monotonic()
        self.live = tuple(t for t in self.targets if t.is_live(now))
        ends = [t.ejected_until for t in self.targets if t.ejected_until > now]
        self.next_expiry = min(ends) if ends else 0.0

    def expire(self) -> None:
        """Called at the top of every pick: one float compare unless an ejection ended."""
        if self.next_expiry and monotonic() >= self.next_expiry:
            self.refresh()

    def pick(self, request: Any = None, exclude: tuple = ()) -> TargetState | None:
        raise NotImplementedError

    def _first_other(self, exclude: tuple) -> TargetState | None:
        for t in self.live:
            if t not in exclude:
                return t
        return None


class RoundRobin(Balancer):
    """Smooth weighted round robin, as nginx does it: weights 5,1,1 give a a b a c a a."""

    algorithm = "round_robin"

    def refresh(self) -> None:
        super().refresh()
        for t in self.targets:
            t.current = 0

    def pick(self, request: Any = None, exclude: tuple = ()) -> TargetState | None:
        if self.next_expiry:
            self.expire()
        live = self.live
        if len(live) == 1 and not exclude:
            return live[0]
        return _swrr(live, exclude)


def _swrr(live: tuple | list, exclude: tuple) -> TargetState | None:
    best = None
    total = 0
    for t in live:
        if exclude and t in exclude:
            continue
        t.current += t.weight
        total += t.weight
        if best is None or t.current > best.current:
            best = t
    if best is not None:
        best.current -= total
    return best


class LeastConn(Balancer):
    """Fewest in-flight requests relative to weight (``active / weight``); ties are
    broken by smooth weighted round robin among the tied targets. Pools with more than
    ``EXACT_LEAST_CONN`` live targets use weighted power-of-two-choices (as Envoy's
    least_request): the less loaded of two random live targets, O(1).
    """

    algorithm = "least_conn"

    def refresh(self) -> None:
        super().refresh()
        for t in self.targets:
            t.current = 0

    def pick(self, request: Any = None, exclude: tuple = ()) -> TargetState | None:
        if self.next_expiry:
            self.expire()
        live = self.live
        n = len(live)
        if n == 1 and not exclude:
            return live[0]
        if n > EXACT_LEAST_CONN:
            a = live[_random.randrange(n)]
            b = live[_random.randrange(n)]
            if not exclude or (a not in exclude and b not in exclude):
                return a if a.active * b.weight <= b.active * a.weight else b
        return _least(live, exclude)


def _least(live: tuple, exclude: tuple) -> TargetState | None:
    best: list[TargetState] = []
    ba = bw = 0
    for t in live:
        if exclude and t in exclude:
            continue
        if not best:
            best = [t]
            ba, bw = t.active, t.weight
            continue
        lhs, rhs = t.active * bw, ba * t.weight
        if lhs < rhs:
            best = [t]
            ba, bw = t.active, t.weight
        elif lhs == rhs:
            best.append(t)
    if not best:
        return None
    if len(best) == 1:
        return best[0]
    return _swrr(best, ())


class Random(Balancer):
    """Weighted random: bisect into the cumulative weights precomputed at refresh."""

    algorithm = "random"

    def refresh(self) -> None:
        super().refresh()
        self.cum = list(accumulate(t.weight for t in self.live))
        self.total = self.cum[-1] if self.cum else 0

    def pick(self, request: Any = None, exclude: tuple = ()) -> TargetState | None:
        if self.next_expiry:
            self.expire()
        if not self.total:
            return None
        live = self.live
        for _ in range(3):
            t = live[bisect_right(self.cum, _random.random() * self.total)
                     if len(live) > 1 else 0]
            if not exclude or t not in exclude:
                return t
        return self._first_other(exclude)


class ConsistentHash(Balancer):
    """A hash ring with virtual nodes (``VNODES`` per target of average weight) over the
    live targets; the key is the client address, a request header or a cookie
    (``pool.hash_on`` / ``pool.hash_key``); a request without the header or cookie
    hashes on its client address. Points derive from the target address, so every
    node and worker builds the same ring, and adding or removing one of N targets
    moves about 1/N of the keys. Lookup: one blake2b and one bisect."""

    algorithm = "consistent_hash"

    def __init__(self, pool: Any, targets: Iterable[TargetState]):
        self.hash_on = getattr(pool, "hash_on", "client_ip")
        key = getattr(pool, "hash_key", "") or ""
        if self.hash_on == "header":
            self.key_b = wire.header_name(key).lower()
        elif self.hash_on == "cookie":
            self.key_b = wire.cookie_name(key)
        else:
            self.key_b = b""
        self._points: dict[tuple, list[int]] = {}  # (id(target), count) -> ring points
        super().__init__(pool, targets)

    def _target_points(self, t: TargetState, count: int) -> list[int]:
        key = (id(t), count)
        pts = self._points.get(key)
        if pts is None:
            base = f"{t.host}:{t.port}-".encode()
            pts = []
            i = 0
            while len(pts) < count:  # 4 points per digest, as ketama
                d = hashlib.blake2b(base + str(i).encode(), digest_size=32).digest()
                pts.extend(int.from_bytes(d[j:j + 8], "big") for j in range(0, 32, 8))
                i += 1
            pts = pts[:count]
            self._points[key] = pts
        return pts

    def refresh(self) -> None:
        super().refresh()
        live = self.live
        ring: list[tuple[int, int]] = []
        if live:
            mean = sum(t.weight for t in live) / len(live)
            for idx, t in enumerate(live):
                count = max(1, round(VNODES * t.weight / mean))
                ring.extend((p, idx) for p in self._target_points(t, count))
        ring.sort()
        self.ring_keys = [p for p, _ in ring]
        self.ring_targets = [live[i] for _, i in ring]

    def key_of(self, request: Any) -> bytes:
        if request is None:
            return b""
        if self.hash_on == "header":
            v = header_value(request.headers, self.key_b)
            if v is not None:
                return v
        elif self.hash_on == "cookie":
            v = cookie_value(request.headers, self.key_b)
            if v is not None:
                return v
        return request.conn.client_b

    def lookup(self, key: bytes) -> int:
        """Ring index for ``key``."""
        i = bisect_left(self.ring_keys, _hash64(key))
        return 0 if i == len(self.ring_keys) else i

    def pick(self, request: Any = None, exclude: tuple = ()) -> TargetState | None:
        if self.next_expiry:
            self.expire()
        targets = self.ring_targets
        if not targets:
            return None
        i = self.lookup(self.key_of(request))
        t = targets[i]
        if not exclude or t not in exclude:
            return t
        n = len(targets)  # a retry: walk clockwise to the next target not tried
        for k in range(1, n):
            t = targets[(i + k) % n]
            if t not in exclude:
                return t
        return None


class Sticky(Balancer):
    """Cookie-based sticky sessions over any algorithm. A request whose cookie names a
    live target (not excluded) goes there; otherwise the inner algorithm picks and the
    response sets the cookie (``request.set_cookie``) to the picked target's opaque id."""

    algorithm = "sticky"

    def __init__(self, pool: Any, targets: Iterable[TargetState], inner: Balancer):
        self.inner = inner
        self.cookie = wire.cookie_name(pool.sticky_cookie)
        self.by_id: dict[bytes, TargetState] = {}
        targets = tuple(targets)
        for t in targets:
            t.sticky_id = sticky_id(pool.id, t)
            self.by_id[t.sticky_id] = t
        self.prefix = b"Set-Cookie: " + self.cookie + b"="
        self.suffix = b"; Path=/; HttpOnly; SameSite=Lax\r\n"
        super().__init__(pool, targets)

    def refresh(self) -> None:
        self.inner.refresh()
        self.live = self.inner.live
        self.next_expiry = self.inner.next_expiry
        self.live_set = frozenset(self.live)

    def pick(self, request: Any = None, exclude: tuple = ()) -> TargetState | None:
        if self.next_expiry and monotonic() >= self.next_expiry:
            self.refresh()
        if request is not None:
            v = cookie_value(request.headers, self.cookie)
            if v is not None:
                t = self.by_id.get(v)
                if t is not None and t in self.live_set and (not exclude or t not in exclude):
                    request.set_cookie = None
                    return t
        t = self.inner.pick(request, exclude)
        if t is not None and request is not None:
            request.set_cookie = self.prefix + t.sticky_id + self.suffix
        return t


ALGORITHMS: dict[str, type[Balancer]] = {
    "round_robin": RoundRobin,
    "least_conn": LeastConn,
    "random": Random,
    "consistent_hash": ConsistentHash,
}


def build(pool: Any, targets: Iterable[TargetState]) -> Balancer:
    targets = tuple(targets)
    inner = ALGORITHMS.get(pool.algorithm, RoundRobin)(pool, targets)
    if getattr(pool, "sticky_cookie", ""):
        return Sticky(pool, targets, inner)
    return inner
