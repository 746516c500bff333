"""A large file: 1,000 routes apply in one version (the time is reported, not asserted)."""
from __future__ import annotations

import time

import pytest

from controlplane.proxy.models import Route
from controlplane.publishing.models import ConfigVersion

from .helpers import apply, as_text

pytestmark = pytest.mark.django_db

ROUTES = 1000


def large_file() -> dict:
    return {
        "switchyard": 1,
        "pools": [{"name": "backend", "targets": [{"host": "127.0.0.1", "port": 9000}]}],
        "routes": [{"name": f"r{i:04d}", "hosts": [f"r{i:04d}.example.test"], "pool": "backend"}
                   for i in range(ROUTES)],
    }


def test_a_thousand_routes_apply_in_one_version(report_timing):
    text = as_text(large_file())
    started = time.perf_counter()
    result = apply(text, note="bulk import")
    report_timing(f"apply of {ROUTES} routes", time.perf_counter() - started)
    assert result.ok, result.problems[:5]
    assert Route.objects.count() == ROUTES
    version = ConfigVersion.objects.get()
    assert (version.number, version.note, len(version.snapshot["routes"])) == (1, "bulk import", ROUTES)
    started = time.perf_counter()
    again = apply(text)
    report_timing(f"re-apply of the same {ROUTES} routes (no change)", time.perf_counter() - started)
    assert again.ok and again.changes == [] and ConfigVersion.objects.count() == 1
