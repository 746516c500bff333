"""``python -m controlplane.web [Daphne's arguments]``: Daphne with a client header deadline
and a connection cap, so that slow clients cannot hold the control plane's sockets.

Daphne 4.2 has neither: twisted's HTTP channel restarts its idle timer (12 hours in
Daphne) on every byte received, so a client that sends its header one byte every few
seconds stays connected for ever, and every such connection holds a file descriptor.
Here, with Daphne's own server and arguments otherwise unchanged:

- **Header deadline** (``SWITCHYARD_WEB_HEADER_TIMEOUT``, default 10 s, like the data
  plane's): a request's line and headers must be complete within that time of the
  connection opening or of the previous response's end, however the bytes trickle in;
  otherwise the connection is closed. The same timer then bounds the silence between a
  request's body bytes, and closes idle keep-alive connections. WebSocket connections
  are not affected once upgraded.
- **Connection cap** (``SWITCHYARD_WEB_MAX_CONNECTIONS``, default: the open-files limit
  minus ``RESERVED_FDS``): a connection beyond it is closed as soon as it is accepted.
"""
from __future__ import annotations

import logging
import os
import resource

from daphne import cli, server
from twisted.protocols import basic, policies
from twisted.web import http

log = logging.getLogger("switchyard.web")

# File descriptors kept for everything but client connections (database, Redis, logs).
RESERVED_FDS = 256


def header_timeout() -> float:
    return float(os.environ.get("SWITCHYARD_WEB_HEADER_TIMEOUT", "10"))


def max_connections() -> int:
    configured = os.environ.get("SWITCHYARD_WEB_MAX_CONNECTIONS")
    if configured:
        return int(configured)
    soft_limit, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(64, soft_limit - RESERVED_FDS)


class HeaderDeadlineChannel(http.HTTPChannel):
    """Twisted's HTTP/1.1 channel whose idle timer is not restarted by header bytes.

    Twisted arms the timer when the connection opens and when a response ends, and
    stops it once a request is complete; only body bytes restart it here.
    """

    def dataReceived(self, data):
        if not self.line_mode:
            self.resetTimeout()
        basic.LineReceiver.dataReceived(self, data)


class ConnectionCap(policies.WrappingFactory):
    """Refuses (closes at once) connections beyond ``limit`` open ones. The wrapper stays
    the socket's protocol after a WebSocket upgrade, so those are counted too."""

    def __init__(self, wrapped, limit: int):
        super().__init__(wrapped)
        self.limit = limit
        self.refused = 0

    def buildProtocol(self, addr):
        if len(self.protocols) >= self.limit:
            self.refused += 1
            log.warning("web: connection from %s closed: %d connections open (SWITCHYARD_WEB_MAX_CONNECTIONS); "
                        "refused so far: %d", getattr(addr, "host", addr), len(self.protocols), self.refused)
            return None
        return super().buildProtocol(addr)


class Server(server.Server):
    @property
    def http_factory(self):
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory):
        # Server.run() assigns Daphne's HTTP factory here and then listens with this
        # attribute: it gets the header deadline channel, behind the connection cap.
        factory.protocol = HeaderDeadlineChannel
        factory.timeOut = header_timeout()
        self._http_factory = ConnectionCap(factory, max_connections())
        log.info("web: header deadline %.1f s, at most %d connections", factory.timeOut,
                 self._http_factory.limit)


class CommandLineInterface(cli.CommandLineInterface):
    server_class = Server


if __name__ == "__main__":
    CommandLineInterface.entrypoint()
