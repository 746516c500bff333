"""Names the nodes saw TLS handshakes for and have no certificate for (``tls.unknown_sni``,
see dataplane/ondemand.py), handed by the sync consumer to whoever registered here
(``controlplane.acme`` registers on-demand issuance; publishing sits below it)."""
from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger("switchyard.sync")

HANDLERS: list[Callable[[list[str]], object]] = []


def reported(names: list[str]) -> None:
    """Hand validated names on; a handler's error costs the node nothing."""
    for handler in HANDLERS:
        try:
            handler(names)
        except Exception:
            log.exception("handling %d unknown SNI name(s) failed", len(names))
