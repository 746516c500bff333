"""Real loopback upstreams for the health-check tests.

``upstreams`` runs asyncio servers in a background thread; each listens on its own
127.0.0.1 port and can be switched between answering a status, hanging (accepting
but never answering: a timeout), and not listening at all (refused).
"""
from __future__ import annotations

import asyncio
import threading

import pytest

from tests.support import free_port


class Upstream:
    def __init__(self, owner: "Upstreams", port: int, status: int, ssl=None):
        self.owner = owner
        self.port = port
        self.status = status
        self.ssl = ssl
        self.hang = False
        self.raw: bytes | None = None  # when set, sent instead of a proper response
        self.server: asyncio.base_events.Server | None = None
        self.requests: list[bytes] = []

    async def _handle(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            if self.hang:
                await asyncio.sleep(3600)
                return
            if self.raw is not None:
                writer.write(self.raw)
                await writer.drain()
                return
            body = b"ok"
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (self.status, len(body), body))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def start(self):
        async def go():
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.ssl)
        self.owner.call(go())
        return self

    def stop(self):
        async def go():
            if self.server is not None:
                self.server.close()
                self.server = None
        self.owner.call(go())
        return self


class Upstreams:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.all: list[Upstream] = []

    def call(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def add(self, status: int = 200, ssl=None) -> Upstream:
        upstream = Upstream(self, free_port(), status, ssl)
        self.all.append(upstream)
        return upstream.start()

    def close(self):
        for u in self.all:
            u.stop()

        async def cancel_handlers():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.call(cancel_handlers())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def upstreams():
    u = Upstreams()
    yield u
    u.close()
