"""Applies free the replaced tables and keep the live ones out of the cyclic collector."""
import gc

from dataplane.applier import NodeState
from dataplane.router import Router
from tests.dataplane.helpers import pool, route, snapshot


def _snap(n: int) -> dict:
    return snapshot([pool(1, [(1, "127.0.0.1", 9000 + n % 7)])],
                    [route(i + 1, [f"h{i}.v{n}.test"], 1) for i in range(200)])


def _routers() -> list:
    return [o for o in gc.get_objects() if type(o) is Router]  # type(): no weakproxy deref


def test_replaced_tables_are_freed_and_live_ones_are_frozen():
    gc.unfreeze()
    gc.collect()
    others = {id(o) for o in _routers()}  # other tests' nodes in this process
    state = NodeState(node_name="t")
    state.apply(1, "h1", _snap(1))
    baseline = gc.get_freeze_count()
    assert baseline > 1000  # the live tables are frozen, out of routine collections
    for n in range(2, 40):
        state.apply(n, f"h{n}", _snap(n))
    # no garbage of older versions was frozen along: the count does not grow per apply
    assert gc.get_freeze_count() < baseline * 1.2
    gc.unfreeze()
    mine = [o for o in _routers() if id(o) not in others]
    assert mine == [state.tables.router]  # every replaced version is already freed
