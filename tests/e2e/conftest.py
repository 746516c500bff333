"""Fixtures for the end-to-end tests: one control-plane installation per mode and session."""
from __future__ import annotations

import pytest

from tests.conftest import POSTGRES_URL, REDIS_URL, require_services
from tests.e2e.harness import ControlPlaneEnv, PostgresDatabase, RedisDatabase, Stack

MODES = ["embedded", pytest.param("production", marks=pytest.mark.postgres)]


def make_control_plane(mode: str, root):
    """(ControlPlaneEnv, cleanup) for ``mode``; production gets a fresh PostgreSQL DB and Redis index."""
    cleanups = []
    try:
        if mode == "production":
            require_services("postgres", "redis")
            pg = PostgresDatabase(POSTGRES_URL)
            cleanups.append(pg.drop)
            rd = RedisDatabase(REDIS_URL)
            cleanups.append(rd.release)
            cp = ControlPlaneEnv(mode, root, database_url=pg.url, redis_url=rd.url)
        else:
            cp = ControlPlaneEnv(mode, root)
        cleanups.append(cp.close)
        cp.setup()
    except BaseException:
        for fn in reversed(cleanups):
            fn()
        raise

    def cleanup():
        for fn in reversed(cleanups):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - cleanup must go on
                print(f"e2e cleanup: {fn} failed: {exc}")
    return cp, cleanup


@pytest.fixture(scope="session", params=MODES)
def control_plane(request, tmp_path_factory):
    """A migrated control-plane installation (database + var dir) for one mode, shared by a session."""
    cp, cleanup = make_control_plane(request.param, tmp_path_factory.mktemp(f"cp-{request.param}"))
    yield cp
    cleanup()


@pytest.fixture
def make_stack(control_plane, tmp_path):
    """Factory: ``make_stack(**extra_control_plane_env)`` -> a Stack, closed after the test."""
    stacks = []

    def make(**cp_env) -> Stack:
        stack = Stack(control_plane, tmp_path / f"stack{len(stacks)}", cp_env)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


@pytest.fixture
def running(make_stack):
    """Control plane + one node serving one site; returns (stack, node, site, upstream)."""
    stack = make_stack()
    stack.start_control_plane()
    upstream = stack.add_upstream("base")
    site = stack.create_site("base", upstream)
    node = stack.add_node()
    node.wait_served(site["host"], upstream.name, timeout=30)
    stack.wait_node_in_sync(node)
    return stack, node, site, upstream
