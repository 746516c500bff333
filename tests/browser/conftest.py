"""Browser tests: a real Daphne (embedded mode, temp SQLite) and Debian's chromium
driven by Playwright (no browser download). Skipped with a visible reason when
chromium or playwright is missing, unless REQUIRE_SERVICES=1 (then they fail)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require_services, services_required
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("SWITCHYARD_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


SERVER: dict = {}


def _wait_port(port: int, proc, timeout=30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"daphne did not listen on {port} within {timeout} s")


@pytest.fixture(scope="session")
def browser_requirements():
    require_services("chromium")
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} not found (apt-get install chromium)"
        pytest.fail(message) if services_required() else pytest.skip(message)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        message = f"playwright is not installed ({exc}); pip install -r requirements-test.txt"
        pytest.fail(message) if services_required() else pytest.skip(message)


@pytest.fixture(scope="session")
def live_server_url(browser_requirements, tmp_path_factory):
    var = tmp_path_factory.mktemp("browser-var")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(SWITCHYARD_VAR_DIR=str(var), SWITCHYARD_SQLITE_PATH=str(var / "db.sqlite3"),
               DJANGO_SETTINGS_MODULE="controlplane.settings", CELERY_TASK_ALWAYS_EAGER="0",
               SWITCHYARD_LIVE_POLL_SECONDS="0.5", PYTHONPATH=str(ROOT))
    python = sys.executable
    SERVER["env"] = env
    subprocess.run([python, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=300)
    seed = (Path(__file__).parent / "seed.py").read_text()
    subprocess.run([python, "manage.py", "shell", "-c", seed], cwd=ROOT, env=env, check=True, timeout=300)
    port = free_port()
    log = open(var / "daphne.log", "wb")
    proc = subprocess.Popen([python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "controlplane.asgi:application"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        if os.environ.get("SWITCHYARD_KEEP_BROWSER_LOG"):
            shutil.copy(var / "daphne.log", ROOT / "artifacts" / "daphne.log")


@pytest.fixture(scope="module")
def browser(browser_requirements):
    """Module-scoped: Playwright's sync API keeps an event loop running in this thread
    while it is open, which would break every asyncio test that follows on the same
    xdist worker. ``make test`` runs with ``--dist loadfile`` so a module's tests stay
    together and the loop is gone before another module's tests start."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, live_server_url):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live_server_url)
    pg = context.new_page()
    pg.set_default_timeout(15000)
    yield pg
    context.close()


@pytest.fixture(scope="session")
def screenshots():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def shot(page, name):
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    return shot


@pytest.fixture
def run_django(live_server_url):
    """Run Python code in the test server's database (a separate process)."""
    def run(code: str) -> str:
        done = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=SERVER["env"],
                              check=True, timeout=120, capture_output=True, text=True)
        return done.stdout
    return run


def create_superuser(cp, username: str, password: str) -> None:
    """A platform admin in the database of a ``tests.e2e.harness.ControlPlaneEnv``."""
    cp.manage("shell", "-c", "from django.contrib.auth import get_user_model\n"
                             f"get_user_model().objects.create_superuser({username!r}, 'admin@example.com', "
                             f"{password!r})")


def signed_in(browser, base_url: str, username: str, password: str, width: int = 1280, height: int = 900):
    """(context, page): a new browser context of ``width`` × ``height`` on ``base_url``, signed
    in through the login form; close the context when done."""
    import re
    context = browser.new_context(viewport={"width": width, "height": height}, base_url=base_url)
    page = context.new_page()
    page.set_default_timeout(30000)
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    return context, page
