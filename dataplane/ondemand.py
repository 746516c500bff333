"""On-demand TLS, node side: the SNI names nobody has a certificate for yet.

The listener's SNI callback (``dataplane.tls``) cannot await, so when a handshake names
a host that a tenant's route serves and no certificate on this node covers, it only
calls ``UNKNOWN.note(table, name)``: a set insert, bounded (``schema.MAX_UNKNOWN_SNI``
names per report; once full, further names are counted as dropped until the next
report), only for syntactically valid host names (the callback has lower-cased them).
The handshake itself goes on as before (the default certificate, or a failure): it does
not wait for an order. The sync client (``dataplane.sync``) drains the set at most every
``schema.UNKNOWN_SNI_SECONDS`` and sends one ``tls.unknown_sni`` message; a name reported
within ``REPEAT_SECONDS`` is not reported again. With ``--workers N`` each worker drains
its own set into the supervisor's stats poll (``dataplane.workers``), and the supervisor
reports them. The control plane decides (``controlplane.acme.ondemand``).
"""
from __future__ import annotations

import time
from typing import Any

from dataplane import schema

REPEAT_SECONDS = 30.0
MAX_RECENT = 4096


class UnknownSni:
    __slots__ = ("pending", "dropped", "recent")

    def __init__(self) -> None:
        self.pending: set[str] = set()
        self.dropped = 0
        self.recent: dict[str, float] = {}  # name -> when last reported

    def note(self, table: Any, name: str) -> None:
        """From the SNI callback: ``name`` got no certificate of its own from ``table``
        (a ``tls.CertTable``). Cheap: only for names a tenant's route serves."""
        pending = self.pending
        if name in pending:
            return
        if len(pending) >= schema.MAX_UNKNOWN_SNI:
            self.dropped += 1
            return
        owner = table.owner_of(name)
        if not isinstance(owner, str) or table.for_host(name) is not None:
            return  # the platform's or nobody's host, or a certificate covers it
        if schema.SNI_NAME.fullmatch(name):
            pending.add(name)

    def add(self, names: Any) -> None:
        """Names a worker drained (already checked there; checked again, bounded)."""
        if not isinstance(names, list):
            return
        for name in names[:schema.MAX_UNKNOWN_SNI]:
            if len(self.pending) >= schema.MAX_UNKNOWN_SNI:
                self.dropped += 1
            elif isinstance(name, str) and schema.SNI_NAME.fullmatch(name):
                self.pending.add(name)

    def take(self) -> list[str]:
        """Everything noted since the last call (for a worker's stats answer)."""
        if not self.pending:
            return []
        names, self.pending = sorted(self.pending), set()
        return names

    def report(self, now: float | None = None) -> list[str]:
        """The names to report now: noted since the last report and not reported within
        REPEAT_SECONDS."""
        names = self.take()
        if not names:
            return []
        now = time.monotonic() if now is None else now
        recent = self.recent
        if len(recent) > MAX_RECENT:
            for key in [k for k, at in recent.items() if now - at >= REPEAT_SECONDS]:
                del recent[key]
            if len(recent) > MAX_RECENT:
                recent.clear()
        out = []
        for name in names:
            at = recent.get(name)
            if at is None or now - at >= REPEAT_SECONDS:
                recent[name] = now
                out.append(name)
        return out


UNKNOWN = UnknownSni()  # one per process
