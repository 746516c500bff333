"""Slow clients cannot hold the control plane's sockets.

The control plane is started exactly as ``make run``'s Procfile starts it (its ``web``
line, ``harness.procfile_argv``) on a free loopback port. Slowloris clients send a
request line and then one header byte per second; the documented header deadline
(``SWITCHYARD_WEB_HEADER_TIMEOUT``, 10 s) closes each of them while the dashboard keeps
answering, and connections beyond ``SWITCHYARD_WEB_MAX_CONNECTIONS`` are closed at once.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from tests.e2e.harness import ControlPlaneEnv, Proc, free_port, http_get, procfile_argv, wait_until

pytestmark = pytest.mark.e2e

HEADER_DEADLINE = 10.0  # the documented default
SLOW_CLIENTS = 300
# The deadline is a reactor timer; allow for scheduling on a loaded machine.
CLOSE_ALLOWANCE = 2.0


def start_web(tmp_path, **env) -> tuple[Proc, int]:
    cp = ControlPlaneEnv("embedded", tmp_path)
    cp.manage("migrate", "--noinput", "-v", "0")
    port = free_port()
    web_env = {**cp.env, "SWITCHYARD_WEB_PORT": str(port), **env}
    proc = Proc("web", procfile_argv("web", web_env), web_env, tmp_path / "web.log").start()
    wait_until(lambda: proc.alive and http_get(port, "/login/", timeout=2).status == 200, 60,
               "the control plane to answer", interval=0.1, on_timeout=proc.tail)
    return proc, port


async def slow_client(port: int, stop: asyncio.Event) -> float | None:
    """Sends a request line, then one header byte a second; returns the seconds until the
    server closed the connection, or None if it was still open when ``stop`` was set."""
    opened = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        while not stop.is_set():
            try:
                if await asyncio.wait_for(reader.read(1), 1.0) == b"":
                    return time.monotonic() - opened
            except asyncio.TimeoutError:
                pass
            try:
                writer.write(b"a")
                await writer.drain()
            except ConnectionError:
                return time.monotonic() - opened
        return None
    finally:
        writer.close()


async def dashboard_answers(port: int, stop: asyncio.Event) -> list[int]:
    statuses = []
    while not stop.is_set():
        statuses.append((await asyncio.to_thread(http_get, port, "/login/", None, 5)).status)
        await asyncio.sleep(0.5)
    return statuses


def test_slowloris_connections_are_closed_by_the_header_deadline_and_the_dashboard_keeps_answering(tmp_path):
    web, port = start_web(tmp_path)
    try:
        async def attack():
            stop = asyncio.Event()
            clients = [asyncio.create_task(slow_client(port, stop)) for _ in range(SLOW_CLIENTS)]
            dashboard = asyncio.create_task(dashboard_answers(port, stop))
            await asyncio.wait(clients, timeout=HEADER_DEADLINE + CLOSE_ALLOWANCE + 3)
            stop.set()
            return await asyncio.gather(*clients), await dashboard

        closed_after, statuses = asyncio.run(attack())
    finally:
        web.stop()
    still_open = sum(1 for seconds in closed_after if seconds is None)
    assert still_open == 0, f"{still_open} of {SLOW_CLIENTS} slow clients still connected\n{web.tail()}"
    assert max(closed_after) <= HEADER_DEADLINE + CLOSE_ALLOWANCE, max(closed_after)
    assert min(closed_after) >= HEADER_DEADLINE - 0.5, min(closed_after)
    assert statuses and set(statuses) == {200}, statuses


def test_connections_beyond_the_cap_are_closed_at_once(tmp_path):
    cap = 20
    web, port = start_web(tmp_path, SWITCHYARD_WEB_MAX_CONNECTIONS=str(cap))
    try:
        async def fill_then_one_more():
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(cap)]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            beyond = await asyncio.wait_for(reader.read(), HEADER_DEADLINE / 2)  # not the deadline's doing
            writer.close()
            for _, held_writer in held:
                held_writer.close()
            return beyond

        assert asyncio.run(fill_then_one_more()) == b""  # closed by the server
        wait_until(lambda: http_get(port, "/login/", timeout=2).status == 200, HEADER_DEADLINE + CLOSE_ALLOWANCE,
                   "the control plane to answer once the held connections are gone", on_timeout=web.tail)
        assert "connections open (SWITCHYARD_WEB_MAX_CONNECTIONS)" in web.log_path.read_text(errors="replace")
    finally:
        web.stop()
