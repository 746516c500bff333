"""The threshold state machine for active health checks (pure, no Django).

A target changes state only after ``healthy_threshold`` consecutive passing
results (when unhealthy) or ``unhealthy_threshold`` consecutive failing results
(when healthy). The counters live in the database (``TargetHealth``) so that any
worker can continue where another stopped.
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
            unhealthy_threshold: int) -> Step:
    """The state after one check result."""
    healthy_threshold = max(1, int(healthy_threshold))
    unhealthy_threshold = max(1, int(unhealthy_threshold))
    if ok:
        ok_count, fail_count = min(state.consecutive_ok + 1, COUNTER_CAP), 0
        healthy = state.healthy or ok_count >= healthy_threshold
    else:
        ok_count, fail_count = 0, min(state.consecutive_fail + 1, COUNTER_CAP)
        healthy = state.healthy and fail_count < unhealthy_threshold
    return Step(TargetState(healthy, ok_count, fail_count), healthy != state.healthy)
