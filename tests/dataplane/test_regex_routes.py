"""Route regexes run on RE2 (tenant regexes run in linear time): a catastrophic
pattern costs the node's other hosts nothing, and matching keeps ``re.search``
semantics (unanchored unless the pattern anchors itself)."""
import asyncio
import re
import time

import pytest

from dataplane.router import PathRegex
from tests.dataplane.helpers import Backend, Client, NodeProcess, pool, route, snapshot

EVIL = "^/(a+)+$"
# 27 a's then a mismatch: Python's backtracking ``re`` needs seconds for this path
EVIL_PATH = "/" + "a" * 27 + "!"


@pytest.fixture
async def node_with_evil_route(tmp_path):
    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)])],
                    [route(1, ["evil.test"], 1, path=EVIL, path_type="regex", name="evil"),
                     route(2, ["other.test"], 1, name="other")])
    node = await NodeProcess(tmp_path, snap).ready()
    yield node
    node.stop()
    await backend.close()


async def timed_get(port: int, host: str, path: str) -> tuple[int, float]:
    client = await Client(port).connect()
    t0 = time.monotonic()
    try:
        response = await client.request(path=path, host=host)
    finally:
        client.close()
    return response.status, time.monotonic() - t0


async def test_a_catastrophic_regex_costs_other_hosts_nothing(node_with_evil_route):
    port = node_with_evil_route.port
    for _ in range(3):  # a few rounds: the evil request and the other one in flight together
        evil = asyncio.create_task(timed_get(port, "evil.test", EVIL_PATH))
        other = asyncio.create_task(timed_get(port, "other.test", "/"))
        (evil_status, evil_s), (other_status, other_s) = await asyncio.gather(evil, other)
        assert (evil_status, other_status) == (404, 200)
        assert other_s < 0.5 and evil_s < 0.5, (evil_s, other_s)


@pytest.mark.parametrize("pattern, path, found", [
    ("/img/", "/static/img/a.png", True),        # unanchored, as re.search
    ("^/img/", "/static/img/a.png", False),
    ("\\.png$", "/a.png", True),
    ("\\.png$", "/a.png/x", False),
    ("^/caf\u00e9$", "/caf\u00e9", True),        # code points, as re on the decoded path
    ("^/v[0-9]+/users/[^/]+$", "/v2/users/42", True),
    ("(?i)^/API", "/api/x", True),
])
def test_matching_keeps_re_search_semantics(pattern, path, found):
    assert PathRegex(pattern).search(path.encode()) is found
    assert (re.search(pattern, path) is not None) is found
