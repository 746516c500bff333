"""Boundaries of the layout: the data plane never imports Django or the control plane."""
import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import importlib, pkgutil, sys

BLOCKED = ("django", "controlplane", "channels", "daphne", "celery", "rest_framework")

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"dataplane must not import {name!r}")
        return None

sys.meta_path.insert(0, Blocker())
import dataplane
failed = []
# ``__main__`` runs a node when imported; its imports are checked statically below.
names = ["dataplane"] + [m.name for m in pkgutil.walk_packages(dataplane.__path__, "dataplane.")
                         if m.name.rsplit(".", 1)[-1] != "__main__"]
for name in names:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        failed.append(f"{name}: {exc}")
    except SystemExit:
        pass
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("imported", len(names), "modules")
if failed or leaked:
    print("FAILED", failed, leaked)
    sys.exit(1)
"""


def test_dataplane_imports_neither_django_nor_controlplane():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True,
                            timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "imported" in result.stdout


def test_dataplane_sources_name_neither_django_nor_controlplane():
    """Static check as well (covers ``__main__`` and imports inside functions)."""
    offenders = []
    for path in sorted((REPO / "dataplane").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.split(".")[0] in ("django", "controlplane"):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    assert not offenders, offenders
    assert (REPO / "dataplane" / "schema.py").exists()


def test_top_level_layout_exists():
    for name in ("manage.py", "controlplane", "dataplane", "requirements.txt", "tests",
                 "README.md", "Makefile", ".ci/run", "Procfile"):
        assert (REPO / name).exists(), f"{name} is missing"
    assert (REPO / ".ci/run").stat().st_mode & 0o111, ".ci/run is not executable"
