"""Rate limits that hold across nodes without a round trip per request.

Design (one for both modes; README "Rate limits"):

- Each node keeps local token buckets. A limit of ``rate`` requests per second with a
  ``burst`` is, on one node, a bucket filled at ``rate * share`` holding at most
  ``max(1, burst * share)`` tokens, where ``share`` (0..1) is this node's part of the
  limit. A keyed limit (client address or header value) has one bucket per key, each
  with the limit's full rate and burst split the same way. Keyed limits share their
  hottest keys across nodes (the control plane sends a share per hot key); any other
  key is limited by each node alone at the limit's full rate (a key that is not among
  any node's hottest may pass up to the limit on every node it reaches, until it
  becomes one of them).
- Every ``schema.RATELIMIT_SECONDS`` (0.2 s) the node's sync client sends the node's
  demand per limit (requests per second seen, admitted or not, smoothed) and for keyed
  limits its hottest ``schema.MAX_RATELIMIT_KEYS`` keys (as 16-hex digests). The
  control plane's sync consumer puts the report in the shared store (Redis with
  REDIS_URL, the one process's memory in embedded mode), reads every node's latest
  report and answers with this node's shares: ``compute_shares`` below, proportional to
  demand with a small floor (``FLOOR`` of the limit spread over the nodes) so that a node
  whose traffic just started admits something before the next round.
- Fallback: when the control plane says the shared store is unreachable, or when no
  shares arrived for ``STALE_SECONDS`` (the control plane itself is unreachable), every
  limit's share is ``1 / nodes``: ``nodes`` as last told (1 before anything was told).

The per-request path (``admit``) is a dict lookup for a keyed limit and a few float
operations on a prebuilt bucket; ``tick`` (every report) smooths demand, evicts idle
buckets (a full bucket is the same as no bucket) and picks the hot keys. A keyed limit
holds at most ``MAX_KEYS`` buckets: a new key beyond that evicts the oldest one, so a
client varying its address or header cannot grow memory without bound.

Pure standard library: the control plane imports ``compute_shares`` from here.
"""
from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import time
from typing import Any, Iterable

from dataplane import errors, schema

MAX_KEYS = 10000          # buckets per keyed limit
MAX_NODE_KEYS = 50000     # buckets of all the keyed limits of a node together
SWEEP = 256               # oldest buckets of a keyed limit looked at per tick
HEADER_KEY_BYTES = 128    # a header value keys its bucket by its first 128 bytes
FLOOR = 0.02              # of each limit, spread equally over the nodes
STALE_SECONDS = 1.5       # no shares for this long: fall back to 1 / nodes
ALPHA = 0.5               # smoothing of the reported demand (per report)
DETAIL = "rate limit"
MAX_RETRY_AFTER = 3600

KEY_NONE, KEY_CLIENT, KEY_HEADER = 0, 1, 2
_KINDS = {"none": KEY_NONE, "client_ip": KEY_CLIENT, "header": KEY_HEADER}

_templates: dict[int, errors.Template] = {}


def template(wait: float) -> errors.Template:
    """The 429 answer with ``Retry-After`` (whole seconds, at least 1), built once per value."""
    seconds = min(MAX_RETRY_AFTER, max(1, math.ceil(wait)))
    t = _templates.get(seconds)
    if t is None:
        status, etype, detail = errors.ERRORS["rate_limited"]
        t = _templates[seconds] = errors.Template("rate_limited", status, etype, detail,
                                                  extra=f"Retry-After: {seconds}\r\n")
    return t


class KeyBudget:
    """The buckets of all the keyed limits of one node process, counted together, so that
    many tenants' limits cannot make one tick walk more than about ``MAX_NODE_KEYS``."""

    __slots__ = ("used", "cap")

    def __init__(self, cap: int = MAX_NODE_KEYS):
        self.used = 0
        self.cap = cap


class Bucket:
    __slots__ = ("key", "tokens", "stamp", "seen", "demand", "tick", "rate", "cap")

    def __init__(self, key: Any, tokens: float, stamp: float):
        self.key = key
        self.tokens = tokens
        self.stamp = stamp
        self.seen = 0        # requests since the last tick
        self.demand = 0.0    # smoothed requests per second, as of tick ``tick``
        self.tick = 0
        self.rate = 0.0      # a hot key's own refill rate (0: the limit's share)
        self.cap = 0.0       # a hot key's own capacity (0: the limit's share)


def key_id(key: Any) -> str:
    """The 16-hex digest a key is reported as (never the address or header itself)."""
    return hashlib.blake2b(repr(key).encode(), digest_size=8).hexdigest()


class Limit:
    """One limit (a route's or a tenant's) on this node."""

    __slots__ = ("id", "spec", "rate", "burst", "kind", "header", "share", "share_rate",
                 "share_cap", "one", "buckets", "hot", "tuned", "budget", "touched", "ticks")

    def __init__(self, lid: str, spec: schema.RateLimit, share: float, now: float,
                 budget: KeyBudget | None = None):
        self.id = lid
        self.budget = budget or KeyBudget(MAX_KEYS)
        self.spec = spec
        self.rate = float(spec.rate)
        self.burst = float(spec.burst)
        self.kind = _KINDS[spec.key]
        self.header = spec.header.lower().encode("ascii")
        self.share = self.share_rate = self.share_cap = 0.0
        self.buckets: dict[Any, Bucket] = {}
        self.hot: dict[str, Any] = {}     # key id -> key, of the keys last reported
        self.tuned: list[Bucket] = []     # buckets with their own rate
        self.set_share(share)
        self.one = Bucket(None, self.share_cap, now)
        self.touched: list[Bucket] = []  # keyed: the buckets with requests since the last tick
        # (keyed limits use ``one`` only for the demand of all their keys together)
        self.ticks = 0

    def set_share(self, share: float) -> None:
        self.share = share
        self.share_rate = self.rate * share
        self.share_cap = max(1.0, self.burst * share)

    # ---- the hot path
    def admit(self, ex: Any) -> float:
        """0.0 when the request may pass (a token is taken), else the seconds until
        one will be there. ``ex``: the forwarder's exchange (its ``t0`` is the time)."""
        kind = self.kind
        now = ex.t0
        if kind == KEY_NONE:
            b = self.one
        else:
            if kind == KEY_CLIENT:
                k = ex.client_key()
            else:
                k = b""
                name = self.header
                for lname, _, value in ex.headers:
                    if lname == name:
                        k = value[:HEADER_KEY_BYTES]
                        break
            b = self.buckets.get(k)
            if b is None:
                b = self.new_bucket(k, now)
            if not b.seen:  # once per key and tick: the tick looks at these only
                self.touched.append(b)
        rate = b.rate or self.share_rate
        t = b.tokens
        elapsed = now - b.stamp
        if elapsed > 0.0:
            t += elapsed * rate
            cap = b.cap or self.share_cap
            if t > cap:
                t = cap
            b.stamp = now
        b.seen += 1
        if t >= 1.0:
            b.tokens = t - 1.0
            return 0.0
        b.tokens = t
        return (1.0 - t) / rate if rate > 0.0 else float(MAX_RETRY_AFTER)

    def new_bucket(self, k: Any, now: float) -> Bucket:
        buckets = self.buckets
        budget = self.budget
        if buckets and (len(buckets) >= MAX_KEYS or budget.used >= budget.cap):
            del buckets[next(iter(buckets))]  # the oldest key goes (insertion order): O(1)
            budget.used -= 1
        b = buckets[k] = Bucket(k, self.share_cap, now)
        budget.used += 1
        return b

    # ---- every report
    def tick(self, now: float, dt: float) -> tuple[float, dict[str, float]]:
        """Smooth demand over the last ``dt`` seconds; returns (demand, {key id: demand}
        of the hottest keys). Keyed limits look only at the keys that had requests since
        the last tick (their demand decays meanwhile, computed when next seen) and at
        ``SWEEP`` of the oldest buckets, dropping the idle ones: the cost follows the
        traffic, not the size of the key table."""
        keep = 1.0 - ALPHA
        if self.kind == KEY_NONE:
            b = self.one
            b.demand = b.demand * keep + ALPHA * b.seen / dt
            b.seen = 0
            return b.demand, {}
        self.ticks += 1
        n = self.ticks
        touched, self.touched = self.touched, []
        seen = 0
        for b in touched:
            seen += b.seen
            b.demand = b.demand * keep ** (n - b.tick) + ALPHA * b.seen / dt
            b.tick = n
            b.seen = 0
        self.sweep(now)
        total = self.one.demand = self.one.demand * keep + ALPHA * seen / dt  # the whole limit's
        hottest = heapq.nlargest(schema.MAX_RATELIMIT_KEYS, touched, key=lambda b: b.demand)
        self.hot = {key_id(b.key): b.key for b in hottest}
        return total, {key_id(b.key): round(b.demand, 3) for b in hottest}

    def sweep(self, now: float) -> None:
        """Look at the ``SWEEP`` oldest buckets: an idle one (full again, no request in the
        last tick) goes, an active one moves to the end of the table."""
        buckets = self.buckets
        share_rate, share_cap = self.share_rate, self.share_cap
        gone = 0
        for k in list(itertools.islice(buckets, SWEEP)):
            b = buckets.pop(k)
            if b.seen or b.tick == self.ticks or \
                    b.tokens + (now - b.stamp) * (b.rate or share_rate) < (b.cap or share_cap):
                buckets[k] = b
            else:
                gone += 1
        self.budget.used -= gone

    def set_shares(self, share: float, keys: dict[str, float]) -> None:
        self.set_share(share)
        for b in self.tuned:
            b.rate = b.cap = 0.0
        self.tuned = []
        for kid, frac in keys.items():
            b = self.buckets.get(self.hot.get(kid, self))  # ``self``: never a key
            if b is not None:
                b.rate = max(self.rate * frac, 1e-6)
                b.cap = max(1.0, self.burst * frac)
                self.tuned.append(b)


def admit(limits: tuple, ex: Any) -> float:
    """Every limit of a route in turn (its own, then its tenant's): 0.0 or the wait."""
    for lim in limits:
        wait = lim.admit(ex)
        if wait:
            return wait
    return 0.0


class RateLimits:
    """The node's limits and their shares, kept across applies (an unchanged limit keeps
    its buckets: a config push is no free burst)."""

    def __init__(self) -> None:
        self.limits: dict[str, Limit] = {}
        self._pending: dict[str, Limit] | None = None  # built, not yet swapped in
        self.budget = KeyBudget()
        self.nodes = 1
        self.fallback = True          # until the first shares arrive
        self.store_down_since: float | None = None  # epoch: what the control plane said
        self.local_since: float | None = time.time()  # epoch: when this node fell back
        self.last_shares = 0.0        # monotonic
        self.last_tick = time.monotonic()
        self.reports = self.share_messages = 0

    def default_share(self) -> float:
        return 1.0 / self.nodes

    def build(self, routes: Iterable[schema.Route], tenant_limits: Iterable[schema.TenantRateLimit]
              ) -> tuple[dict[int, Limit], dict[str, Limit]]:
        """(route id -> its limit, tenant slug -> its limit); limits no longer configured
        are forgotten when the tables are swapped (``adopt``)."""
        now = time.monotonic()
        old = self.limits
        new: dict[str, Limit] = {}

        def get(lid: str, spec: schema.RateLimit) -> Limit:
            lim = old.get(lid)
            if lim is None or lim.spec != spec:
                lim = Limit(lid, spec, self.default_share(), now, self.budget)
            new[lid] = lim
            return lim

        by_route = {r.id: get(f"r:{r.id}", r.rate_limit) for r in routes if r.rate_limit is not None}
        by_tenant = {t.tenant: get(f"t:{t.tenant}", t.limit) for t in tenant_limits}
        self._pending = new
        return by_route, by_tenant

    def adopt(self) -> None:
        """The tables built last were swapped in: their limits are the node's."""
        if self._pending is not None:
            self.limits, self._pending = self._pending, None
        self.budget.used = sum(len(lim.buckets) for lim in self.limits.values())

    # ---- the sync client's side
    def report(self) -> dict | None:
        """Tick every limit and build the demand report (None without limits). Falls back
        to local shares when the last shares are stale."""
        now = time.monotonic()
        dt = max(0.001, now - self.last_tick)
        self.last_tick = now
        if not self.fallback and now - self.last_shares > STALE_SECONDS:
            self.enter_fallback()
        if not self.limits:
            return None
        out = {}
        for lid, lim in list(self.limits.items())[:schema.MAX_RATELIMIT_LIMITS]:
            demand, keys = lim.tick(now, dt)
            entry: dict = {"demand": round(demand, 3)}
            if keys:
                entry["keys"] = keys
            out[lid] = entry
        self.reports += 1
        return {"type": schema.MSG_RATELIMIT_REPORT, "limits": out}

    def enter_fallback(self) -> None:
        if not self.fallback:
            self.fallback = True
            self.local_since = time.time()
        share = self.default_share()
        for lim in self.limits.values():
            lim.set_shares(share, {})

    def apply_shares(self, msg: Any) -> None:
        """A shares message (raises ``schema.RateLimitMessageInvalid``)."""
        nodes, fallback, since, limits = schema.parse_ratelimit_shares(msg)
        self.nodes = nodes
        self.share_messages += 1
        self.last_shares = time.monotonic()
        if fallback:
            self.store_down_since = since if since is not None else time.time()
            self.enter_fallback()
            return
        self.fallback = False
        self.store_down_since = self.local_since = None
        share = self.default_share()
        for lid, lim in self.limits.items():
            entry = limits.get(lid)
            if lim.kind != KEY_NONE:  # a cold key is limited here alone; hot keys get shares
                lim.set_shares(1.0, entry[1] if entry is not None else {})
            elif entry is None:
                lim.set_shares(share, {})
            else:
                lim.set_shares(*entry)

    def status(self) -> dict:
        """For /readyz and tests: how this node shares its limits now."""
        return {"limits": len(self.limits), "nodes": self.nodes,
                "mode": "fallback" if self.fallback else "shared",
                "store_down_since": self.store_down_since, "local_since": self.local_since,
                "shares": {lid: round(lim.share, 4) for lid, lim in list(self.limits.items())[:50]}}


# ---------------------------------------------------------------- control plane side

def compute_shares(node: str, reports: dict[str, dict[str, tuple[float, dict[str, float]]]],
                   floor: float = FLOOR) -> dict:
    """``node``'s shares from every fresh node's latest report (``reports``: node ->
    ``schema.parse_ratelimit_report`` result, ``node`` included). A limit's share is
    ``floor / n + (1 - floor) * demand / total demand`` over the ``n`` nodes (``1 / n``
    when nobody has demand); a hot key's likewise over the nodes that reported that key
    (a node that did not report it counts as none of its demand). Returns the
    ``limits`` of a shares message."""
    n = max(1, len(reports))
    mine = reports.get(node) or {}
    out = {}
    for lid, (demand, keys) in mine.items():
        total = 0.0
        key_totals = dict.fromkeys(keys, 0.0)
        for rep in reports.values():
            entry = rep.get(lid)
            if entry is None:
                continue
            total += entry[0]
            for kid, d in entry[1].items():
                if kid in key_totals:
                    key_totals[kid] += d
        share = floor / n + (1.0 - floor) * demand / total if total > 0 else 1.0 / n
        entry_out: dict = {"share": round(min(1.0, share), 6)}
        if keys:
            entry_out["keys"] = {kid: round(min(1.0, floor / n + (1.0 - floor) * d / key_totals[kid]), 6)
                                 if key_totals[kid] > 0 else round(1.0 / n, 6)
                                 for kid, d in keys.items()}
        out[lid] = entry_out
    return out


# ---------------------------------------------------------------- --workers N

class WorkerShares:
    """A supervisor's ``ratelimits`` (dataplane/workers.py): the node's one report is the
    sum of its workers' reports, and the node's share of each limit is split over the
    workers in proportion to each worker's demand (``compute_shares`` again, with the
    same floor), so the node as a whole admits its share whichever worker the kernel
    hands a connection to. ``ask()``: every worker's report, [(worker key, report or
    None)]; ``tell(worker key, shares message)`` sends one worker its shares."""

    def __init__(self, ask, tell) -> None:
        self.ask = ask
        self.tell = tell
        self.workers: dict[str, dict] = {}  # worker key -> its last parsed report
        self.nodes = 1
        self.fallback = True
        self.last_shares = 0.0  # monotonic

    async def report(self) -> dict | None:
        replies = await self.ask()
        self.workers = {}
        merged: dict[str, list] = {}
        for key, rep in replies:
            if rep is None:
                continue
            try:
                parsed = schema.parse_ratelimit_report(rep)
            except schema.RateLimitMessageInvalid:
                continue
            self.workers[key] = parsed
            for lid, (demand, keys) in parsed.items():
                entry = merged.setdefault(lid, [0.0, {}])
                entry[0] += demand
                for kid, d in keys.items():
                    entry[1][kid] = entry[1].get(kid, 0.0) + d
        if not self.workers:
            return None
        if time.monotonic() - self.last_shares > STALE_SECONDS:  # no control plane: even split
            for key in self.workers:
                self.tell(key, {"type": schema.MSG_RATELIMIT_SHARES, "nodes": self.nodes * len(self.workers),
                                "fallback": True, "since": None, "limits": {}})
        out = {}
        for lid, (demand, keys) in merged.items():
            top = dict(heapq.nlargest(schema.MAX_RATELIMIT_KEYS, keys.items(), key=lambda kv: kv[1]))
            out[lid] = {"demand": round(demand, 3), **({"keys": top} if top else {})}
        return {"type": schema.MSG_RATELIMIT_REPORT, "limits": out}

    def apply_shares(self, msg: Any) -> None:
        nodes, fallback, since, limits = schema.parse_ratelimit_shares(msg)
        self.nodes, self.fallback = nodes, fallback
        self.last_shares = time.monotonic()
        count = max(1, len(self.workers))
        for key in self.workers:
            if fallback:
                self.tell(key, {"type": schema.MSG_RATELIMIT_SHARES, "nodes": nodes * count,
                                "fallback": True, "since": since, "limits": {}})
                continue
            split = compute_shares(key, self.workers)
            own: dict = {}
            for lid, (share, keys) in limits.items():
                part = split.get(lid)
                if part is None:
                    continue
                own[lid] = {"share": round(share * part["share"], 6),
                            "keys": {kid: round(frac * part.get("keys", {}).get(kid, 1.0 / count), 6)
                                     for kid, frac in keys.items()}}
            self.tell(key, {"type": schema.MSG_RATELIMIT_SHARES, "nodes": nodes * count,
                            "fallback": False, "since": None, "limits": own})
