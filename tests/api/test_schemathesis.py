"""Schemathesis against a live control plane, as platform staff and as a tenant token.

Runs the CLI (schemathesis 4.x) in a subprocess against pytest-django's live server,
with few examples per operation so it takes a minute or two; prints its summary.
The deterministic "coverage" phase (~4,000 boundary cases per token, several minutes
against the in-process live server) runs with SCHEMATHESIS_PHASES=examples,coverage,fuzzing,stateful;
what it found (malformed pagination, ids, JSON types) is pinned by test_strictness.py.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.tenancy.models import ApiToken, hash_token

from .conftest import build_side

pytestmark = pytest.mark.django_db(transaction=True)

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Business rules the schema cannot express (hosts inside delegations, quotas, the
# upstream policy ...) refuse some schema-valid bodies with a 400, so
# positive_data_acceptance does not apply; every other check runs.
EXCLUDED = "positive_data_acceptance"


def fixed_token(user, pk, tenant=None, role=""):
    """A token with a high id, so the run cannot revoke it by guessing small ids."""
    plain = f"sy_schemathesis_{pk}"
    ApiToken.objects.create(id=pk, user=user, tenant=tenant, role=role, token_hash=hash_token(plain),
                            prefix=plain[:10])
    return plain


def run_schemathesis(url: str, token: str, tmp_path: Path, label: str) -> tuple[int, str, str]:
    cmd = [str(SCHEMATHESIS), "run", f"{url}/api/v1/schema/?format=json",
           "-H", f"Authorization: Bearer {token}", "--max-examples", os.environ.get("SCHEMATHESIS_EXAMPLES", "10"),
           "--phases", os.environ.get("SCHEMATHESIS_PHASES", "examples,fuzzing,stateful"), "--exclude-checks", EXCLUDED,
           # the diagnostics API (controlplane/diagnostics) is tested by its own suite;
           # its tail endpoint is a long poll that would eat the time budget here.
           "--exclude-path-regex", os.environ.get("SCHEMATHESIS_EXCLUDE", "^/api/v1/diagnostics/"),
           "--seed", "42", "--workers", "1", "--request-timeout", "20", "--max-failures", "20",
           "--report", "junit", "--report-dir", str(tmp_path / label)]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    (tmp_path / f"{label}.txt").write_text(proc.stdout + proc.stderr)
    lines = [line.strip(" =") for line in proc.stdout.splitlines() if line.strip(" =")]
    summary = next((line for line in reversed(lines)
                    if re.search(r"\d+ (passed|failed|errors?)\b", line) and " in " in line), lines[-1] if lines else "")
    return proc.returncode, summary, proc.stdout + proc.stderr


def test_it_passes_schemathesis_as_staff_and_as_a_tenant(live_server, tmp_path, settings, capsys):
    from django.contrib.auth import get_user_model

    settings.SWITCHYARD_ENCRYPTION_KEY = "test-encryption-key"
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "127.0.0.1"]
    # by address: "localhost" may try ::1 first on every new connection
    url = live_server.url.replace("://localhost:", "://127.0.0.1:")
    alpha, _beta = build_side("alpha"), build_side("beta")
    staff = get_user_model().objects.create_user("operator", is_staff=True)
    tokens = {"staff": fixed_token(staff, 900001),
              "tenant": fixed_token(alpha.users["owner"], 900002, tenant=alpha.tenant, role="owner")}
    failures = []
    for label, token in tokens.items():
        code, summary, output = run_schemathesis(url, token, tmp_path, label)
        with capsys.disabled():
            print(f"\nschemathesis ({label}): {summary}")
            if os.environ.get("SCHEMATHESIS_VERBOSE"):
                print(output)
        if code != 0:
            failures.append(f"--- {label} --- (full output: {tmp_path / label}.txt)\n"
                            + "\n".join(line[:300] for line in output.splitlines()[-150:]))
    assert not failures, "\n".join(failures)
