"""How long a certificate has left, said the same way everywhere: the certificate pages,
the overview and the expiry alerts all use these two functions (pure; no database)."""
from __future__ import annotations

import datetime as dt
import math

from django.utils import timezone


def days_left(not_after: dt.datetime | None, now: dt.datetime | None = None) -> int | None:
    """Whole days until ``not_after``, rounded to the nearest day (a certificate issued for
    10 days shows 10 right after the upload, not 9); negative once expired (-1 the first
    day after). None without a date."""
    if not_after is None:
        return None
    days = (not_after - (now or timezone.now())) / dt.timedelta(days=1)
    if days <= 0:
        return -max(1, math.ceil(-days))
    return int(math.floor(days + 0.5))


def remaining_text(not_after: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """"10 days", "5 hours", "less than 2 hours" or "expired": the alert's subject and the
    pages' badges say the same."""
    if not_after is None:
        return ""
    remaining = not_after - (now or timezone.now())
    if remaining <= dt.timedelta(0):
        return "expired"
    hours = remaining / dt.timedelta(hours=1)
    if hours >= 48:
        return f"{days_left(not_after, now)} days"
    if hours >= 2:
        return f"{int(hours)} hours"
    return "less than 2 hours"
