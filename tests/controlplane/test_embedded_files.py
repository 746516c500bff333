"""Embedded mode keeps its state owner-only: var/ is 0700 and the SQLite database
(it holds sessions) with its -wal and -shm companions is 0600, for a fresh
installation and for files an older version left readable."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Runs in a fresh process with the embedded settings: writes a row (WAL mode keeps
# the -wal and -shm files while the connection is open) and reports every mode.
SHOW_MODES = """
import json, os
from django.conf import settings
from django.db import connection
from django.contrib.sessions.backends.db import SessionStore
s = SessionStore(); s["k"] = "v"; s.create()
files = [settings.VAR_DIR] + sorted(p for p in settings.VAR_DIR.iterdir() if p.name.startswith("db.sqlite3"))
print(json.dumps({p.name: oct(os.stat(p).st_mode & 0o777) for p in files}))
"""


def modes_after_start(var: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(SWITCHYARD_VAR_DIR=str(var), SWITCHYARD_SQLITE_PATH=str(var / "db.sqlite3"),
               DJANGO_SETTINGS_MODULE="controlplane.settings")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=300)
    out = subprocess.run([sys.executable, "manage.py", "shell", "-c", SHOW_MODES], cwd=ROOT, env=env,
                         check=True, capture_output=True, text=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_it_creates_var_and_the_database_owner_only(tmp_path):
    var = tmp_path / "var"
    modes = modes_after_start(var)
    assert modes == {"var": "0o700", "db.sqlite3": "0o600", "db.sqlite3-shm": "0o600", "db.sqlite3-wal": "0o600"}


def test_it_tightens_files_an_older_version_left_readable(tmp_path):
    var = tmp_path / "var"
    var.mkdir(mode=0o755)
    for name in ("db.sqlite3", "db.sqlite3-journal"):
        (var / name).touch()
        (var / name).chmod(0o644)
    modes = modes_after_start(var)
    assert modes.pop("var") == "0o700" and "db.sqlite3" in modes
    assert set(modes.values()) == {"0o600"}, modes
