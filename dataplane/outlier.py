"""Passive health: outlier ejection from the traffic the node forwards.

Follows Envoy's ``consecutive_5xx`` detector (with local-origin errors counted, i.e.
``split_external_local_origin_errors: false``): each of these is a failure of the
target and a run of the pool's ``passive_failures`` of them in a row (default
``CONSECUTIVE``; 0 turns passive ejection off for the pool) ejects it —

- a 5xx response status from the upstream;
- a connect failure: refused, timed out, unroutable, DNS failure;
- the connection closed or reset before a complete response head
  (``connection_terminated``), an invalid response (``http_protocol_error``),
  no response headers in time (``http_response_timeout``).

Any response below 500 resets the run. Failures that say nothing about the target
(the address policy, the client going away, a 413 from the proxy) are not counted.

An ejection lasts the pool's ``passive_ejection_seconds`` (default ``BASE_SECONDS``)
× 2^(n-1) for the n-th ejection in a row (capped at ``MAX_SECONDS``, or at the base
when that is longer); the multiplier resets once the target has gone
``RESET_SECONDS`` since its last ejection ended without being ejected again.
At most ``MAX_FRACTION`` of a pool's targets are ejected at once, but always at least
one may be; and a target is never ejected when it is the last live one of its pool.

No timer runs per ejection: the record holds the monotonic end time, balancers keep
the earliest end and refresh on the first pick after it (see balancer.Balancer).
Records are keyed by target id and survive config applies (an apply re-binds them
to the new ``TargetState`` objects), so a config change never un-ejects a target.
State is per process: with ``--workers N`` each worker judges the traffic it saw.

Apart from ejection, each record counts the current run of connect failures of one
kind (``connect_failed`` / ``connect_ok``: plain integer and reference updates on the
record, nothing allocated per request); ``failing()`` lists the runs of at least
``RUN_REPORT``, which the node reports to the control plane with its traffic.
"""
from __future__ import annotations

import time
from typing import Any

monotonic = time.monotonic
wallclock = time.time

CONSECUTIVE = 5
BASE_SECONDS = 30.0
MAX_SECONDS = 300.0
MAX_FRACTION = 0.10
RESET_SECONDS = 300.0

# A run of this many connect failures in a row on a target is reported to the control
# plane as passive evidence (``failing()``), whether or not it led to an ejection.
RUN_REPORT = 3
# Connect failures (errors.ERRORS codes) that make up such a run; a connect that
# succeeds ends it.
CONNECT_FAILURE_CODES = frozenset((
    "connection_refused", "connection_timeout", "destination_ip_unroutable", "dns_error",
    "tls_protocol_error", "tls_certificate_error",
))

# errors.ERRORS codes that count as a failure of the target
FAILURE_CODES = frozenset((
    "connection_refused", "connection_timeout", "destination_ip_unroutable", "dns_error",
    "connection_terminated", "http_protocol_error", "http_response_timeout",
    "http_response_incomplete",
))


class Record:
    """Passive-health state of one target (kept across applies)."""

    __slots__ = ("target_id", "fails", "until", "ejections", "last_end", "pool_name", "addr",
                 "run", "run_code", "run_since")

    def __init__(self, target_id: int):
        self.target_id = target_id
        self.fails = 0          # consecutive failures
        self.until = 0.0        # monotonic end of the current ejection (0: not ejected)
        self.ejections = 0      # ejections in a row (the doubling exponent)
        self.last_end = 0.0
        self.pool_name = ""
        self.addr = ""
        self.run = 0            # consecutive connect failures of the same kind
        self.run_code = ""      # their errors.ERRORS code (a constant: no allocation)
        self.run_since = 0.0    # epoch seconds of the run's first failure


class OutlierDetector:
    def __init__(self, consecutive: int = CONSECUTIVE, base_seconds: float = BASE_SECONDS,
                 max_seconds: float = MAX_SECONDS, max_fraction: float = MAX_FRACTION,
                 reset_seconds: float = RESET_SECONDS):
        self.consecutive = consecutive
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds
        self.max_fraction = max_fraction
        self.reset_seconds = reset_seconds
        self.records: dict[int, Record] = {}
        self.total_ejections = 0

    # ---- apply time
    def record_for(self, target_id: int) -> Record:
        r = self.records.get(target_id)
        if r is None:
            r = self.records[target_id] = Record(target_id)
        return r

    def forget_except(self, target_ids: set[int]) -> None:
        """Drop records of targets that are no longer configured."""
        for tid in [t for t in self.records if t not in target_ids]:
            del self.records[tid]

    # ---- hot path (called by the forwarder)
    @staticmethod
    def success(t: Any) -> None:
        o = t.outlier
        if o is not None and o.fails:
            o.fails = 0

    def failure(self, t: Any, pool: Any) -> bool:
        """Count a failure of target ``t`` (a TargetState) in ``pool`` (applier.PoolRuntime,
        whose ``passive_failures`` / ``passive_ejection_seconds`` override the detector's
        defaults). Returns True when this failure ejected the target."""
        o = t.outlier
        if o is None:
            return False
        consecutive = getattr(pool, "passive_failures", self.consecutive)
        if consecutive <= 0:
            return False  # passive ejection is off for this pool
        o.fails += 1
        if o.fails < consecutive:
            return False
        now = monotonic()
        if o.until > now:
            return False  # already ejected (requests that started before the ejection)
        if not self._may_eject(t, pool, now):
            return False
        if o.last_end and now - o.last_end > self.reset_seconds:
            o.ejections = 0
        o.ejections += 1
        base = getattr(pool, "passive_ejection_seconds", self.base_seconds)
        duration = min(max(self.max_seconds, base), base * (2 ** min(o.ejections - 1, 16)))
        o.until = o.last_end = now + duration
        o.fails = 0
        o.pool_name = pool.name
        o.addr = t.addr
        self.total_ejections += 1
        pool.balancer.refresh()
        return True

    @staticmethod
    def connect_failed(t: Any, code: str) -> None:
        """Count a connect failure of target ``t`` in its run (same ``code`` in a row)."""
        o = t.outlier
        if o is None:
            return
        if o.run and o.run_code == code:
            o.run += 1
        else:
            o.run, o.run_code, o.run_since = 1, code, wallclock()
        if not o.addr:
            o.addr = t.addr

    @staticmethod
    def connect_ok(t: Any) -> None:
        o = t.outlier
        if o is not None and o.run:
            o.run = 0

    def _may_eject(self, t: Any, pool: Any, now: float) -> bool:
        targets = pool.targets
        ejected = sum(1 for x in targets if x.ejected_until > now)
        if ejected >= max(1, int(len(targets) * self.max_fraction)):
            return False
        # never the last live target: some other target must still take traffic
        return any(x is not t and x.is_live(now) for x in targets)

    # ---- reporting
    def current(self) -> list[dict]:
        """Targets ejected now: for metrics and, later, for the control plane."""
        now = monotonic()
        return [
            {"target": r.target_id, "pool": r.pool_name, "addr": r.addr,
             "remaining_seconds": round(r.until - now, 3), "ejections": r.ejections}
            for r in self.records.values() if r.until > now
        ]

    def failing(self, min_run: int = RUN_REPORT) -> list[dict]:
        """Targets whose last ``min_run`` or more connects all failed the same way."""
        return [
            {"target": r.target_id, "count": r.run, "code": r.run_code, "since": round(r.run_since, 1)}
            for r in self.records.values() if r.run >= min_run
        ]
