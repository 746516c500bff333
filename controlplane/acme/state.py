"""Pure decisions of the order life cycle: backoff after failures, when a certificate is
renewed, and whether an order is due now. No I/O: time is passed in."""
from __future__ import annotations

import datetime as dt

MAX_BACKOFF = dt.timedelta(hours=24)
SHORT_LIVED = dt.timedelta(days=10)
# An attempt older than this is taken to be dead (its worker died): another may start.
STALE_ATTEMPT = dt.timedelta(minutes=15)


def backoff(failures: int, base_seconds: float) -> dt.timedelta:
    """The wait after the ``failures``-th failure in a row: base, then doubling, capped at 24 h."""
    if failures < 1:
        return dt.timedelta(0)
    seconds = base_seconds * 2 ** min(failures - 1, 32)
    return min(dt.timedelta(seconds=seconds), MAX_BACKOFF)


def renewal_time(not_before: dt.datetime, not_after: dt.datetime) -> dt.datetime:
    """Without the CA's renewal information: two thirds into the lifetime, half for
    certificates that live less than 10 days."""
    lifetime = not_after - not_before
    share = 1 / 2 if lifetime < SHORT_LIVED else 2 / 3
    return not_before + lifetime * share


def in_progress(started: dt.datetime | None, now: dt.datetime) -> bool:
    return started is not None and now - started < STALE_ATTEMPT


def is_due(state: str, *, now: dt.datetime, started=None, next_retry=None, renew_at=None) -> bool:
    """Whether a worker should run the order now."""
    if in_progress(started, now):
        return False
    if state == "pending":
        return True
    if state == "failed":
        return next_retry is None or next_retry <= now
    return renew_at is not None and renew_at <= now
