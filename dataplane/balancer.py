"""Load balancing over a pool's live targets.

Every algorithm is a ``Balancer`` subclass registered in ``ALGORITHMS`` under the
schema's algorithm name. ``pick`` receives the request (for hashing algorithms) and
the targets already tried (retries go to a different target); ``refresh`` is called
after health or state changes. Targets carry ``active`` (in-flight requests), kept
by the forwarder, for algorithms that need it.
"""
from __future__ import annotations

from typing import Any, Iterable


class TargetState:
    """A target at run time. ``healthy`` is set from the control plane's checks."""

    __slots__ = ("id", "host", "port", "weight", "state", "healthy", "current",
                 "active", "hostpool", "addr", "host_header")

    def __init__(self, target: Any, hostpool: Any = None, healthy: bool = True):
        self.id = target.id
        self.host = target.host
        self.port = target.port
        self.weight = target.weight
        self.state = target.state
        self.healthy = healthy
        self.current = 0  # smooth weighted round robin's running weight
        self.active = 0
        self.hostpool = hostpool
        host = f"[{target.host}]" if ":" in target.host else target.host
        self.addr = f"{host}:{target.port}"
        self.host_header = f"Host: {self.addr}\r\n".encode()

    @property
    def live(self) -> bool:
        return self.state == "enabled" and self.healthy and self.weight > 0


class Balancer:
    """Interface: subclasses implement ``pick``; ``live`` is kept current by refresh."""

    algorithm = ""

    def __init__(self, pool: Any, targets: Iterable[TargetState]):
        self.pool = pool
        self.targets = tuple(targets)
        self.live: tuple[TargetState, ...] = ()
        self.refresh()

    def refresh(self) -> None:
        self.live = tuple(t for t in self.targets if t.live)

    def pick(self, request: Any = None, exclude: tuple = ()) -> TargetState | None:
        raise NotImplementedError


class RoundRobin(Balancer):
    """Smooth weighted round robin, as nginx does it: weights 5,1,1 give a a b a c a a."""

    algorithm = "round_robin"

    def refresh(self) -> None:
        super().refresh()
        for t in self.targets:
            t.current = 0

    def pick(self, request: Any = None, exclude: tuple = ()) -> TargetState | None:
        live = self.live
        if len(live) == 1 and not exclude:
            return live[0]
        best = None
        total = 0
        for t in live:
            if exclude and t in exclude:
                continue
            t.current += t.weight
            total += t.weight
            if best is None or t.current > best.current:
                best = t
        if best is not None:
            best.current -= total
        return best


ALGORITHMS: dict[str, type[Balancer]] = {"round_robin": RoundRobin}


def build(pool: Any, targets: Iterable[TargetState]) -> Balancer:
    # Algorithms not implemented yet fall back to round robin.
    return ALGORITHMS.get(pool.algorithm, RoundRobin)(pool, targets)
