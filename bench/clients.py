"""Load clients the harness runs as their own processes (``python -m bench.clients ...``).

``openloop``  fixed-rate (open-loop) HTTP/1.1 client: requests are *scheduled* at
              ``rate`` per second whatever the server does, and each latency includes the
              wait for a free connection, so a stall is counted for every request it
              delays (no coordinated omission, like wrk2). Debian has no wrk2 and wrk
              cannot pace requests, hence this client. It prints one JSON line.
              The client's timer has ~1 ms resolution: requests due within one tick are
              released together and timed from their release.
``idle``      opens N keep-alive connections (one request each, response read), prints
              ``ready N``, holds them until stdin closes or ``--hold`` seconds pass.

Both are bounded in time and only ever connect to 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time


def _loop_runner():
    try:
        import uvloop
        return asyncio.Runner(loop_factory=uvloop.new_event_loop), "uvloop"
    except ImportError:
        return asyncio.Runner(), "asyncio"


class _Conn(asyncio.Protocol):
    """One keep-alive connection; ``request()`` resolves when the whole response arrived."""

    def __init__(self):
        self.transport = None
        self.buf = b""
        self.need = -1  # bytes still expected for the body (-1: reading headers)
        self.waiter: asyncio.Future | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.status = 0

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        if self.waiter and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data):
        self.buf += data
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buf[:end].decode("latin-1")
                self.buf = self.buf[end + 4:]
                lines = head.split("\r\n")
                self.status = int(lines[0].split(" ", 2)[1])
                length = None
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    if k.strip().lower() == "content-length":
                        length = int(v.strip())
                if length is None:  # the harness's backends always send Content-Length
                    self._finish(ValueError("response without Content-Length"))
                    return
                self.need = length
            if len(self.buf) < self.need:
                return
            self.buf = self.buf[self.need:]
            self.need = -1
            self._finish(None)
            if not self.buf:
                return

    def _finish(self, exc):
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            if exc is None:
                w.set_result(self.status)
            else:
                w.set_exception(exc)

    def request(self, raw: bytes) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return self.waiter


def _raw_request(host: str, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: switchyard-bench\r\n\r\n".encode()


async def _connect(port: int) -> _Conn:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(_Conn, "127.0.0.1", port)
    return proto


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


async def openloop(port: int, host: str, path: str, rate: float, conns: int, duration: float,
                   warmup: float) -> dict:
    now_ = time.perf_counter  # uvloop's loop.time() has only millisecond resolution
    raw = _raw_request(host, path)
    pool = [await _connect(port) for _ in range(conns)]
    queue: asyncio.Queue = asyncio.Queue()
    latencies: list[float] = []
    total = 0
    errors = {"status": 0, "io": 0}
    sent = 0
    t_start = now_()
    t_measure = t_start + warmup
    t_end = t_measure + duration

    async def worker(conn: _Conn):
        nonlocal total
        while True:
            due = await queue.get()
            if due is None:
                return
            try:
                status = await asyncio.wait_for(conn.request(raw), 10.0)
                if status >= 400:
                    errors["status"] += 1
            except (ConnectionError, OSError, asyncio.TimeoutError, ValueError):
                errors["io"] += 1
                try:
                    conn.transport.abort()
                    conn = await _connect(port)
                except OSError:
                    await asyncio.sleep(0.01)
                continue
            total += 1
            if due:
                latencies.append(now_() - due)

    workers = [asyncio.ensure_future(worker(c)) for c in pool]
    interval = 1.0 / rate
    i = 0
    while True:
        now = now_()
        if now >= t_end:
            break
        # enqueue every request whose scheduled time has come
        while t_start + i * interval <= now:
            # the clock starts when the request is released (timer resolution is ~1 ms, so
            # requests are released in small bursts); waiting for a free connection counts
            queue.put_nowait(now if t_start + i * interval >= t_measure else 0.0)
            i += 1
            if t_start + i * interval >= t_measure:
                sent += 1
        await asyncio.sleep(max(0.0, min(t_start + i * interval - now_(), 0.001)))
    backlog = queue.qsize()
    for _ in workers:
        queue.put_nowait(None)
    done, pending = await asyncio.wait(workers, timeout=10.0)
    for t in pending:
        t.cancel()
    for c in pool:
        c.transport.close()
    lat = sorted(latencies)
    return {
        "client": "python-asyncio-openloop", "rate": rate, "connections": conns,
        "duration_s": duration, "scheduled": sent, "completed": len(lat),
        "achieved_rps": len(lat) / duration if duration else 0.0,
        "backlog_at_end": backlog, "total_completed": total, "errors": errors["status"] + errors["io"],
        "p50_us": percentile(lat, 50) * 1e6, "p90_us": percentile(lat, 90) * 1e6,
        "p99_us": percentile(lat, 99) * 1e6, "p999_us": percentile(lat, 99.9) * 1e6,
        "max_us": (lat[-1] * 1e6) if lat else float("nan"),
    }


async def idle(port: int, host: str, path: str, count: int, hold: float, batch: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 1024), hard))
    raw = _raw_request(host, path)
    conns: list[_Conn] = []
    failed = 0

    async def one():
        nonlocal failed
        try:
            c = await _connect(port)
            await asyncio.wait_for(c.request(raw), 10.0)
            conns.append(c)
        except (OSError, asyncio.TimeoutError, ValueError):
            failed += 1

    for start in range(0, count, batch):
        await asyncio.gather(*(one() for _ in range(min(batch, count - start))))
    print(f"ready {len(conns)} failed {failed}", flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.create_future()
    try:
        loop.add_reader(sys.stdin.fileno(), lambda: stdin_closed.done() or stdin_closed.set_result(None))
    except (ValueError, OSError):
        pass
    try:
        await asyncio.wait_for(stdin_closed, hold)
    except asyncio.TimeoutError:
        pass
    alive = sum(1 for c in conns if not c.closed.done())
    for c in conns:
        c.transport.close()
    print(f"closed {len(conns)} still_open_at_end {alive}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.clients")
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("openloop")
    o.add_argument("--port", type=int, required=True)
    o.add_argument("--host", default="bench.localhost")
    o.add_argument("--path", default="/small")
    o.add_argument("--rate", type=float, default=3000)
    o.add_argument("--connections", type=int, default=10)
    o.add_argument("--duration", type=float, default=10)
    o.add_argument("--warmup", type=float, default=1)
    i = sub.add_parser("idle")
    i.add_argument("--port", type=int, required=True)
    i.add_argument("--host", default="bench.localhost")
    i.add_argument("--path", default="/small")
    i.add_argument("--count", type=int, default=10000)
    i.add_argument("--hold", type=float, default=60)
    i.add_argument("--batch", type=int, default=250)
    a = ap.parse_args(argv)
    runner, kind = _loop_runner()
    with runner:
        if a.cmd == "openloop":
            out = runner.run(openloop(a.port, a.host, a.path, a.rate, a.connections, a.duration, a.warmup))
            out["loop"] = kind
            print(json.dumps(out), flush=True)
        else:
            runner.run(idle(a.port, a.host, a.path, a.count, a.hold, a.batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
