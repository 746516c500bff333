"""Single sign-on in a real browser: a real Daphne configured with SWITCHYARD_OIDC_* and
local passwords off, against a real OpenID Connect provider on loopback
(django-oauth-toolkit, tests/accounts/oidc_provider/, its own SQLite and RSA key).
The login page offers "Sign in with Test IdP"; the provider's login form sends the
browser back signed in, with the groups claim mapped to staff and to tenant roles at
every sign-in; passwords work only for the break-glass account; an invitation is
accepted through SSO (and refused for another address); deactivated accounts, the
login throttle and two-factor hold on the SSO path."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from tests.accounts.oidc_provider.process import OIDCProvider
from tests.conftest import POSTGRES_URL, REDIS_URL, require_services
from tests.e2e.harness import PostgresDatabase, RedisDatabase
from tests.support import free_port

from .conftest import ROOT, _wait_port

pytestmark = pytest.mark.chromium
PASSWORD = "sso-browser-password"
IDP_PASSWORD = "idp-password-123"
NAME = "Test IdP"
IDP_USERS = [
    {"username": "carol", "email": "carol@example.com", "groups": ["platform-admins", "shop-editors"]},
    {"username": "dave", "email": "dave@example.com", "groups": ["acme-viewers"]},
    {"username": "erin", "email": "erin@example.com", "groups": []},
    {"username": "mallory", "email": "mallory@example.com", "groups": []},
    {"username": "ghost", "email": "ghost@example.com", "groups": []},
    {"username": "tom", "email": "tom@example.com", "groups": []},
    {"username": "frank", "email": "frank@example.com", "groups": ["shop-owners"]},
]
SEED = f"""
from django.contrib.auth import get_user_model
from controlplane.tenancy.models import Membership
from tests.controlplane import helpers as h
User = get_user_model()
User.objects.create_superuser("breakglass", "breakglass@example.com", {PASSWORD!r})
User.objects.create_user("alice", "alice@example.com", {PASSWORD!r})
shop, acme, blog = h.tenant("shop"), h.tenant("acme"), h.tenant("blog")
dave = User.objects.create_user("dave", "dave@example.com", {PASSWORD!r})
Membership.objects.create(user=dave, tenant=shop, role="viewer")
Membership.objects.create(user=dave, tenant=blog, role="viewer")
User.objects.create_user("ghost", "ghost@example.com", {PASSWORD!r}, is_active=False)
User.objects.create_user("frank", "frank@example.com", {PASSWORD!r})
"""


@pytest.fixture(scope="module", params=["embedded", pytest.param("production", marks=pytest.mark.postgres)])
def sso_server(request, browser_requirements, tmp_path_factory):
    """(base URL, run(code), provider): Daphne with SSO against the provider, on a temp
    SQLite (embedded) or a fresh PostgreSQL database and Redis index (production)."""
    cleanups = []
    var = tmp_path_factory.mktemp(f"sso-var-{request.param}")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    if request.param == "production":
        require_services("postgres", "redis")
    try:
        if request.param == "production":
            pg = PostgresDatabase(POSTGRES_URL)
            cleanups.append(pg.drop)
            rd = RedisDatabase(REDIS_URL)
            cleanups.append(rd.release)
            env.update(DATABASE_URL=pg.url, REDIS_URL=rd.url)
        port, idp_port = free_port(), free_port()
        base = f"http://127.0.0.1:{port}"
        provider = OIDCProvider(var / "idp", idp_port, f"{base}/accounts/oidc/sso/login/callback/",
                                [{**u, "password": IDP_PASSWORD} for u in IDP_USERS])
        cleanups.append(provider.stop)
        provider.start()
        env.update(SWITCHYARD_VAR_DIR=str(var), SWITCHYARD_SQLITE_PATH=str(var / "db.sqlite3"),
                   DJANGO_SETTINGS_MODULE="controlplane.settings", PYTHONPATH=str(ROOT),
                   EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
                   SWITCHYARD_OIDC_ISSUER=provider.issuer, SWITCHYARD_OIDC_CLIENT_ID=provider.client_id,
                   SWITCHYARD_OIDC_CLIENT_SECRET=provider.client_secret, SWITCHYARD_OIDC_NAME=NAME,
                   SWITCHYARD_OIDC_SCOPES="openid profile email groups", SWITCHYARD_OIDC_CLAIM="groups",
                   SWITCHYARD_OIDC_STAFF_VALUES="platform-admins",
                   SWITCHYARD_OIDC_TENANT_ROLES="shop-editors:shop:editor,shop-owners:shop:owner,"
                                                "acme-viewers:acme:viewer",
                   SWITCHYARD_LOCAL_PASSWORDS="off", SWITCHYARD_BREAK_GLASS_USER="breakglass")

        def run(code: str) -> str:
            return subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env,
                                  check=True, timeout=300, capture_output=True, text=True).stdout

        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL, timeout=300)
        run(SEED)
        log = open(var / "daphne.log", "wb")
        cleanups.append(log.close)
        proc = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                 "controlplane.asgi:application"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        cleanups.append(lambda: _stop(proc))
        _wait_port(port, proc, timeout=60)
        yield base, run, provider
    finally:
        for cleanup in reversed(cleanups):
            cleanup()


def _stop(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def new_page(browser, sso_server):
    contexts = []

    def make(width=1280):
        context = browser.new_context(viewport={"width": width, "height": 900}, base_url=sso_server[0])
        contexts.append(context)
        pg = context.new_page()
        pg.set_default_timeout(30000)
        return pg
    yield make
    for context in contexts:
        context.close()


def state(run, username: str) -> dict:
    """The account as the control plane stores it (None when there is none)."""
    out = run(f"""
import json
from django.contrib.auth import get_user_model
u = get_user_model().objects.filter(username={username!r}).first()
print(json.dumps(None if u is None else {{"pk": u.pk, "staff": u.is_staff, "email": u.email,
    "sso": u.socialaccount_set.count(),
    "tenants": {{m.tenant.slug: m.role for m in u.memberships.select_related("tenant")}}}}))
""")
    return json.loads(out.strip().splitlines()[-1])


def sso_sign_in(page, username: str, start: str = "/login/"):
    """Click "Sign in with Test IdP" on ``start`` and log in at the provider."""
    if start:
        page.goto(start)
    page.click(f"button.sso-button:has-text('Sign in with {NAME}')")
    page.wait_for_selector("#idp-username")
    page.fill("#idp-username", username)
    page.fill("#idp-password", IDP_PASSWORD)
    page.click("#idp-submit")


def back_on(page, base: str, path_pattern: str):
    page.wait_for_url(re.compile(re.escape(base) + path_pattern))


def test_the_login_page_offers_sso_and_a_group_makes_staff_and_a_tenant_editor(
        sso_server, new_page, screenshots):
    base, run, _ = sso_server
    page = new_page()
    page.goto("/login/")
    assert page.inner_text("button.sso-button") == f"Sign in with {NAME}"
    assert "Password sign-in is off" in page.inner_text("main")
    screenshots(page, "login-sso-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshots(page, "login-sso-390")
    page.set_viewport_size({"width": 1280, "height": 900})

    sso_sign_in(page, "carol", start="")
    back_on(page, base, r"/$")
    carol = state(run, "carol")
    assert carol["staff"] is True and carol["tenants"] == {"shop": "editor"} and carol["sso"] == 1
    assert carol["email"] == "carol@example.com"
    # what the user sees: the staff-only users page, and the tenant
    page.goto("/users/")
    assert page.locator("h1", has_text="Users").count() >= 1
    page.goto("/tenants/shop/")
    assert "shop" in page.inner_text("main")
    screenshots(page, "sso-signed-in-tenant-1280")


def test_an_existing_account_with_the_verified_address_is_linked_and_mapped_tenants_follow_the_claim(
        sso_server, new_page):
    base, run, _ = sso_server
    before = state(run, "dave")
    assert before["tenants"] == {"shop": "viewer", "blog": "viewer"} and before["sso"] == 0
    page = new_page()
    sso_sign_in(page, "dave")
    back_on(page, base, r"/$")
    after = state(run, "dave")
    # the same account, linked; shop (mapped, no matching group) removed, acme granted, blog (unmapped) kept
    assert after["pk"] == before["pk"] and after["sso"] == 1
    assert after["tenants"] == {"acme": "viewer", "blog": "viewer"}
    assert after["staff"] is False


def test_local_passwords_off_refuses_a_password_but_not_the_break_glass_account(sso_server, new_page, screenshots):
    base, run, _ = sso_server
    page = new_page()
    page.goto("/login/")
    page.click("details.break-glass summary")
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("details.break-glass button[type=submit]")
    page.wait_for_selector(".errorlist.nonfield")
    assert "Password sign-in is off" in page.inner_text(".errorlist.nonfield")
    assert page.url.startswith(base + "/login/")

    page.fill("#id_username", "breakglass")
    page.fill("#id_password", PASSWORD)
    page.click("details.break-glass button[type=submit]")
    back_on(page, base, r"/$")
    page.goto("/users/")
    assert page.locator("h1", has_text="Users").count() >= 1
    # staff see who signs in through SSO; no password reset is offered while passwords are off
    page.goto(f"/users/{state(run, 'dave')['pk']}/")
    assert page.inner_text("#sso-linked") == f"linked to {NAME}"
    assert page.locator("#send-reset").count() == 0
    screenshots(page, "user-sso-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshots(page, "user-sso-390")


def invitation_link(run, email: str, tenant: str = "blog", role: str = "editor") -> str:
    out = run(f"""
from controlplane.accounts import services
from controlplane.audit.services import Actor
from controlplane.tenancy.models import Tenant
inv, link, error = services.invite(Actor.system(), Tenant.objects.get(slug={tenant!r}), {email!r}, {role!r},
                                   "http://testserver/")
print(link)
""")
    return "/" + out.strip().splitlines()[-1].split("/", 3)[3]


def test_an_invitation_is_accepted_through_sso_and_refused_for_another_address(
        sso_server, new_page, screenshots):
    base, run, _ = sso_server
    link = invitation_link(run, "erin@example.com")
    page = new_page()
    page.goto(link)
    assert "You are invited to the tenant blog as editor" in page.inner_text("main")
    assert page.locator("#id_password").count() == 0  # local passwords are off: nothing to set
    screenshots(page, "invitation-sso-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshots(page, "invitation-sso-390")
    page.set_viewport_size({"width": 1280, "height": 900})
    sso_sign_in(page, "erin", start="")
    back_on(page, base, r"/tenants/blog/$")
    assert "you are now a member of blog" in page.inner_text("body")
    assert state(run, "erin")["tenants"] == {"blog": "editor"}

    other = invitation_link(run, "someone@example.com")
    page = new_page()
    page.goto(other)
    sso_sign_in(page, "mallory", start="")
    page.wait_for_selector(".sso-error")
    message = page.inner_text(".sso-error")
    assert "This invitation is for someone@example.com" in message and "mallory@example.com" in message
    screenshots(page, "sso-refused-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshots(page, "sso-refused-390")
    assert state(run, "mallory") is None  # refused before any account was made
    page.goto(other)
    assert "You are invited to the tenant blog" in page.inner_text("main")  # still pending


def test_a_deactivated_account_cannot_sign_in_through_sso(sso_server, new_page):
    base, run, _ = sso_server
    page = new_page()
    sso_sign_in(page, "ghost")
    page.wait_for_selector(".sso-error")
    assert "deactivated" in page.inner_text(".sso-error")
    assert page.url.startswith(base + "/accounts/oidc/")
    assert state(run, "ghost")["sso"] == 0


def test_the_login_throttle_holds_on_the_sso_path(sso_server, new_page):
    base, run, _ = sso_server
    page = new_page()
    sso_sign_in(page, "tom")  # the first sign-in creates tom's account
    back_on(page, base, r"/$")
    page = new_page()
    page.goto("/login/")
    page.click("details.break-glass summary")
    for _ in range(5):
        page.fill("#id_username", "tom")
        page.fill("#id_password", "guess")
        page.click("details.break-glass button[type=submit]")
        page.wait_for_selector(".errorlist.nonfield")
    responses = []
    page.on("response", lambda r: responses.append((r.url, r.status)))
    sso_sign_in(page, "tom")
    page.wait_for_selector(".sso-error")
    assert "Too many failed sign-in attempts" in page.inner_text(".sso-error")
    assert any("/login/callback/" in url and status == 429 for url, status in responses)


def test_a_user_with_two_factor_gets_the_code_step_after_sso(sso_server, new_page):
    base, run, _ = sso_server
    codes = run("""
from django.contrib.auth import get_user_model
from controlplane.accounts import twofactor
from controlplane.audit.services import Actor
from tests.accounts.test_two_factor import totp
user = get_user_model().objects.get(username="frank")
secret = twofactor.new_secret()
print(twofactor.enable(Actor.system(), user, secret, totp(secret))[0])
""").strip().splitlines()[-1]
    page = new_page()
    sso_sign_in(page, "frank")
    back_on(page, base, r"/login/code/$")
    page.goto("/")  # not signed in yet
    assert "/login/" in page.url
    page.goto("/login/code/")
    page.fill("input[name=code]", codes)
    page.click("form[action='/login/code/'] button[type=submit]")
    back_on(page, base, r"/$")
    assert state(run, "frank")["tenants"] == {"shop": "owner"}
