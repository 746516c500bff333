"""The threshold state machine for active health checks (pure, no Django).

A target changes state only after ``healthy_threshold`` consecutive passing
results (when unhealthy) or ``unhealthy_threshold`` consecutive failing results
(when healthy) -- except its very first result, which decides an unknown state.
The counters live in the database (``TargetHealth``) so that any worker can
continue where another stopped.
"""
from __future__ import annotations

from dataclasses import dataclass

# Counters only matter up to the largest threshold (100); cap them so they stay small.
COUNTER_CAP = 1000


@dataclass(frozen=True)
class TargetState:
    healthy: bool
    consecutive_ok: int = 0
    consecutive_fail: int = 0


@dataclass(frozen=True)
class Step:
    state: TargetState
    changed: bool  # True when this result flipped ``healthy``


def advance(state: TargetState, ok: bool, *, healthy_threshold: int,
            unhealthy_threshold: int, first: bool = False) -> Step:
    """The state after one check result.

    ``first``: the target has never been checked (at this address). Its health was
    unknown, so the first result decides it at once (HAProxy's ``init-state up``:
    a new target stays in rotation when its first check passes and leaves it when
    its first check fails); the thresholds apply from then on.
    """
    healthy_threshold = max(1, int(healthy_threshold))
    unhealthy_threshold = max(1, int(unhealthy_threshold))
    if ok:
        ok_count, fail_count = min(state.consecutive_ok + 1, COUNTER_CAP), 0
        healthy = state.healthy or ok_count >= healthy_threshold or first
    else:
        ok_count, fail_count = 0, min(state.consecutive_fail + 1, COUNTER_CAP)
        healthy = state.healthy and fail_count < unhealthy_threshold and not first
    return Step(TargetState(healthy, ok_count, fail_count), healthy != state.healthy)
