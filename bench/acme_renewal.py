"""Renewal of an ACME certificate on a node under load.

Stands up the ACME end-to-end stack (``tests/e2e/test_acme.py``: Daphne, a Celery
worker, one data-plane node, an upstream, Debian's Pebble and a loopback RFC 2136 DNS
server), orders a certificate for one route, then keeps ``--clients`` HTTPS clients
busy through the node (each on a kept-alive TLS connection that trusts only Pebble's
root, opening a new connection every ``--reconnect-every`` requests so that new
handshakes happen all along). After ``--phase-seconds`` it forces a renewal (time
travel in the renewal decision: the order's ``renew_at`` is set to now and the order
queued), waits until a new handshake presents the new certificate, and measures
``--phase-seconds`` more. It prints requests, req/s and failures before, during and
after the renewal, and how long the renewal took (ask -> new certificate presented).
Requests failed must be 0.

    .venv/bin/python bench/acme_renewal.py                     # embedded, 8 clients, 5 s phases
    .venv/bin/python bench/acme_renewal.py --mode production --clients 16 --renewals 3
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import wait_until  # noqa: E402
from tests.e2e.test_acme import ISSUE_DEADLINE, AcmeStack, OpenTls  # noqa: E402


class Load:
    """Client threads counting successes and failures into the current phase."""

    def __init__(self, port: int, host: str, root_pem: str, clients: int, reconnect_every: int):
        self.port, self.host, self.root_pem = port, host, root_pem
        self.reconnect_every = reconnect_every
        self.phase = "before"
        self.ok: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _count(self, ok: bool, error: str = "") -> None:
        with self.lock:
            table = self.ok if ok else self.failed
            table[self.phase] = table.get(self.phase, 0) + 1
            if error and len(self.errors) < 20:
                self.errors.append(f"{self.phase}: {error}")

    def _run(self) -> None:
        conn, done = None, 0
        while not self.stop.is_set():
            try:
                if conn is None or done % self.reconnect_every == 0:
                    if conn is not None:
                        conn.close()
                    conn = OpenTls(self.port, self.host, self.root_pem)
                status = conn.get()
                done += 1
                self._count(status == 200, "" if status == 200 else f"status {status}")
            except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                done += 1
                self._count(False, f"{type(exc).__name__}: {exc}")
                conn = None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["embedded", "production"], default="embedded")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--phase-seconds", type=float, default=5.0)
    parser.add_argument("--reconnect-every", type=int, default=20)
    parser.add_argument("--renewals", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="acme-renewal-bench-") as tmp:
        s = AcmeStack(args.mode, Path(tmp))
        try:
            root_pem, host, route_id, cert = s.issued_site("bench")
            load = Load(s.node.https_port, host, root_pem, args.clients, args.reconnect_every)
            load.start()
            spans: dict[str, float] = {}
            took = []
            try:
                time.sleep(args.phase_seconds)
                spans["before"] = args.phase_seconds
                for i in range(args.renewals):
                    load.phase = "during"
                    started = time.monotonic()
                    s.shell.call("force_renewal", route_id=route_id)
                    serial = cert["serialNumber"]
                    cert = wait_until(lambda serial=serial: (c := s.presented_chain(host, root_pem))
                                      and c["serialNumber"] != serial and c, ISSUE_DEADLINE,
                                      f"renewal {i + 1} to reach the node", interval=0.05, on_timeout=s.logs)[0]
                    took.append(time.monotonic() - started)
                    spans["during"] = spans.get("during", 0.0) + took[-1]
                load.phase = "after"
                time.sleep(args.phase_seconds)
                spans["after"] = args.phase_seconds
            finally:
                load.close()
        finally:
            s.close()

    print(f"ACME renewal under load ({args.mode}, {args.clients} HTTPS clients, a new TLS connection every "
          f"{args.reconnect_every} requests, {args.renewals} renewal(s))")
    print(f"{'phase':8} {'requests':>9} {'failed':>7} {'req/s':>9} {'seconds':>8}")
    for phase in ("before", "during", "after"):
        ok, failed = load.ok.get(phase, 0), load.failed.get(phase, 0)
        span = spans.get(phase, 0.0)
        print(f"{phase:8} {ok + failed:9d} {failed:7d} {(ok + failed) / span if span else 0:9.1f} {span:8.2f}")
    total_failed = sum(load.failed.values())
    print(f"requests failed: {total_failed}")
    print("renewal (ask -> node presents the new certificate): "
          + ", ".join(f"{t:.2f} s" for t in took))
    for line in load.errors:
        print(f"  error {line}")
    return 1 if total_failed else 0


if __name__ == "__main__":
    sys.exit(main())
