"""Shared test helpers.

``require_services("postgres", "redis", "chromium")`` skips the calling test with a
visible reason when a service is not reachable; with ``REQUIRE_SERVICES=1`` (set by
``.ci/run``) the skip becomes a failure, so CI always runs everything. Tests marked
``@pytest.mark.postgres`` call it for PostgreSQL and Redis automatically.

Service locations (defaults match ``.ci/run``):
  SWITCHYARD_TEST_POSTGRES_URL  postgresql://postgres@127.0.0.1:5432/postgres  (a maintenance DB;
                                tests create and drop their own databases next to it)
  SWITCHYARD_TEST_REDIS_URL     redis://127.0.0.1:6379/0
"""
from __future__ import annotations

import functools
import os
import shutil

import pytest

POSTGRES_URL = os.environ.get("SWITCHYARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("SWITCHYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def services_required() -> bool:
    return os.environ.get("REQUIRE_SERVICES", "").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=None)
def _postgres_problem() -> str | None:
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc}".strip()
    return None


@functools.lru_cache(maxsize=None)
def _redis_problem() -> str | None:
    try:
        import redis
    except ImportError as exc:
        return f"redis (python client) is not installed ({exc})"
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"Redis is not reachable at {REDIS_URL}: {exc}"
    return None


@functools.lru_cache(maxsize=None)
def _chromium_problem() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return None
    return "chromium is not installed (apt-get install chromium)"


SERVICE_CHECKS = {"postgres": _postgres_problem, "redis": _redis_problem, "chromium": _chromium_problem}


def missing_services(*names: str) -> list[str]:
    """The problems (one message each) of the named services that are not usable."""
    problems = []
    for name in names:
        if name not in SERVICE_CHECKS:
            raise ValueError(f"unknown service {name!r}; known: {sorted(SERVICE_CHECKS)}")
        problem = SERVICE_CHECKS[name]()
        if problem:
            problems.append(problem)
    return problems


def require_services(*names: str) -> None:
    """Skip (or, with REQUIRE_SERVICES=1, fail) the current test unless every service is usable."""
    problems = missing_services(*names)
    if not problems:
        return
    reason = "; ".join(problems)
    if services_required():
        pytest.fail(f"REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "chromium: needs Debian's chromium (skipped without it unless REQUIRE_SERVICES=1)")


def pytest_runtest_setup(item):
    if item.get_closest_marker("postgres"):
        require_services("postgres", "redis")
    if item.get_closest_marker("chromium"):
        require_services("chromium")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a PostgreSQL maintenance database (skips/fails when unreachable)."""
    require_services("postgres")
    return POSTGRES_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the Redis server (skips/fails when unreachable)."""
    require_services("redis")
    return REDIS_URL


# --- timings reported at the end of the run ----------------------------------------
# A test calls ``record_property("timing", "what: 0.123 s")`` (or uses the ``report_timing``
# fixture); the summary lists them, also under pytest-xdist (user_properties travel to the
# controller with the reports).

@pytest.fixture
def report_timing(record_property):
    def report(what: str, seconds: float) -> None:
        record_property("timing", f"{what}: {seconds:.3f} s")
        print(f"[timing] {what}: {seconds:.3f} s")
    return report


def pytest_terminal_summary(terminalreporter):
    lines = []
    for key in ("passed", "failed"):
        for rep in terminalreporter.stats.get(key, []):
            if getattr(rep, "when", None) != "call":
                continue
            for name, value in getattr(rep, "user_properties", ()):
                if name == "timing":
                    lines.append(f"{rep.nodeid}  {value}")
    if lines:
        terminalreporter.section("Switchyard timings")
        for line in sorted(lines):
            terminalreporter.write_line(line)
