"""Helpers every part of the suite (and bench/) shares: waiting on a condition with a
deadline, loopback ports, a fresh in-memory channel layer."""
from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from channels.layers import channel_layers


class WaitTimeout(AssertionError):
    """A condition did not hold before its deadline."""


def _timed_out(what: str, timeout: float, detail: str = "") -> WaitTimeout:
    return WaitTimeout(f"timed out after {timeout:.1f} s waiting for {what}{detail}")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05,
               on_timeout: Callable[[], str] | None = None) -> tuple[Any, float]:
    """Poll ``predicate`` until it returns something truthy; return (that value, seconds taken).

    Meant for other processes, which may not answer yet: an exception from ``predicate``
    counts as "not yet" and the last one is named in the failure, followed by what
    ``on_timeout`` returns (e.g. the tail of a process's log)."""
    start = time.monotonic()
    deadline = start + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value, time.monotonic() - start
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last one
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            extra = ("\n" + on_timeout()) if on_timeout else ""
            raise _timed_out(what, timeout, detail + extra)
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], Any], timeout: float = 10.0, what: str | None = None,
                           interval: float = 0.01) -> Any:
    """Poll ``predicate`` (a plain or a coroutine function) until it gives something truthy,
    yielding to the event loop in between; return that value.

    Meant for code in this process: an exception from ``predicate`` fails the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(what or getattr(predicate, "__qualname__", repr(predicate)), timeout)
        await asyncio.sleep(interval)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def fresh_layer(settings):
    """Autouse in the modules that import it: every test gets its own in-memory channel
    layer (the layer is bound to an event loop, and each test has its own loop), and sync
    consumers wake only on hints and heartbeats, never on a database poll."""
    channel_layers.backends = {}
    settings.SWITCHYARD_POLL_SECONDS = 0
    yield
    channel_layers.backends = {}
