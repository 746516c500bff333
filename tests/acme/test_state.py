"""The order life cycle's pure decisions: backoff, renewal time, whether an order is due."""
import datetime as dt

import pytest

from controlplane.acme import state

H = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


def test_backoff_is_the_base_then_doubles_and_stops_at_a_day():
    waits = [state.backoff(n, 3600) for n in range(1, 8)]
    assert waits == [H, 2 * H, 4 * H, 8 * H, 16 * H, 24 * H, 24 * H]
    assert state.backoff(0, 3600) == dt.timedelta(0)
    assert state.backoff(500, 3600) == 24 * H  # no overflow for long failure runs


def test_backoff_base_is_configurable():
    assert [state.backoff(n, 2) for n in (1, 2, 3)] == [dt.timedelta(seconds=s) for s in (2, 4, 8)]


@pytest.mark.parametrize("lifetime, renew_after", [
    (90 * DAY, 60 * DAY),     # two thirds
    (45 * DAY, 30 * DAY),
    (10 * DAY, 10 * DAY * 2 / 3),
    (6 * DAY, 3 * DAY),       # short-lived: half
    (dt.timedelta(hours=1), dt.timedelta(minutes=30)),
])
def test_renewal_time(lifetime, renew_after):
    assert state.renewal_time(NOW, NOW + lifetime) == NOW + renew_after


def test_pending_order_is_due_unless_a_live_attempt_holds_it():
    assert state.is_due("pending", now=NOW)
    assert not state.is_due("pending", now=NOW, started=NOW - dt.timedelta(minutes=1))
    assert state.is_due("pending", now=NOW, started=NOW - state.STALE_ATTEMPT)  # its worker died


def test_failed_order_waits_for_its_retry_time():
    assert not state.is_due("failed", now=NOW, next_retry=NOW + dt.timedelta(seconds=1))
    assert state.is_due("failed", now=NOW, next_retry=NOW)


def test_valid_order_is_due_at_its_renewal_time():
    assert not state.is_due("valid", now=NOW, renew_at=NOW + H)
    assert state.is_due("valid", now=NOW, renew_at=NOW - H)
    assert not state.is_due("valid", now=NOW, renew_at=None)
