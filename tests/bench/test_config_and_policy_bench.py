"""``bench/config_apply.py`` and ``bench/policy_bench.py`` measure what they say.

The config bench's file is a valid configuration that one apply publishes whole (the
script asserts the published route count itself), and the script runs end to end. The
policy bench's snapshot carries the policies it names, the schema accepts it, and a node
built from it has them on the route: the access list with basic auth (the credentials
kept from the upstream) and the rate limit. (The script itself checks, on the running
node, that a request without credentials gets 401.) Figures are never asserted.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict:
    return {k: v for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE") and not k.startswith("SWITCHYARD_")}


@pytest.mark.timeout(600)
def test_the_config_bench_publishes_its_file_and_applies_it_on_a_node():
    proc = subprocess.run([sys.executable, "bench/config_apply.py", "--sizes", "40"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])["results"][0]
    assert result["routes"] == 40 and result["db"] == "sqlite"
    assert result["certificates"] >= 1  # the platform wildcard at least goes to the nodes
    for key in ("publish_s", "reapply_s", "change_s", "compile_s", "gate_s", "node_apply_s", "node_reapply_s"):
        assert result[key] > 0, key


def test_the_config_bench_file_has_what_makes_validation_slow():
    sys.path.insert(0, str(REPO))
    from bench.config_apply import config

    data = config(1000, certificates=False)
    routes = data["routes"]
    assert len(routes) == 1000
    on_root = [r for r in routes if r.get("path", "/") == "/"]
    assert len(on_root) >= 400  # many routes on one path: the overlap check's worst case
    hosts = [h for r in routes for h in r["hosts"]]
    assert any(h.startswith("*.") for h in hosts) and any(len(r["hosts"]) > 1 for r in routes)
    assert len(set(hosts)) < len(hosts)  # hosts shared by routes on different paths
    assert {r["tenant"] for r in routes} - {None} and None in {r["tenant"] for r in routes}
    assert all(t["delegations"] for t in data["tenants"])


def test_the_policy_bench_snapshot_carries_the_policies_a_node_enforces():
    sys.path.insert(0, str(REPO))
    import asyncio

    from bench import policy_bench
    from dataplane import schema
    from dataplane.applier import NodeState

    snap = {"schema": 1, "pools": [{"id": 1, "name": "bench", "tenant": None,
                                    "targets": [{"id": 1, "host": "127.0.0.1", "port": 9}]}],
            "routes": [{"id": 1, "name": "bench", "tenant": None, "hosts": ["bench.localhost"], "pool": 1}]}
    used = policy_bench.add_policies(snap)
    assert used == ["access list of 100 rules", "basic auth", "rate limit 1000000/s per client address"]
    parsed = schema.parse_snapshot(snap)
    assert len(parsed.access_lists[0].rules) == 100
    state = NodeState()

    async def apply():  # a node applies inside its event loop
        state.apply(1, schema.snapshot_hash(snap), snap)
    asyncio.run(apply())
    entry = state.tables.router.match("bench.localhost", "/small", b"GET", [])
    assert entry is not None and entry.access is not None
    assert entry.access.auth is not None
    assert b"authorization" in entry.req_drop  # the credentials are not sent upstream
    assert parsed.routes[0].rate_limit.rate >= 1_000_000
    assert entry.rate_limits  # the limit is on the route (it counts every request)
    assert entry.forward_auth is None


def test_the_forward_auth_variant_asks_the_backend_and_nothing_else():
    sys.path.insert(0, str(REPO))
    from bench import policy_bench
    from dataplane import schema

    snap = {"schema": 1, "pools": [{"id": 1, "name": "bench", "tenant": None,
                                    "targets": [{"id": 1, "host": "127.0.0.1", "port": 9}]}],
            "routes": [{"id": 1, "name": "bench", "tenant": None, "hosts": ["bench.localhost"], "pool": 1}]}
    used = policy_bench.add_policies(snap, **policy_bench.VARIANTS["fauth"],
                                     forward_auth_url="http://127.0.0.1:9/small")
    assert used == ["forward auth"]
    route = schema.parse_snapshot(snap).routes[0]
    assert route.forward_auth.url == "http://127.0.0.1:9/small"
    assert route.access_list is None and route.rate_limit is None
