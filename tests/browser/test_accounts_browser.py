"""Accounts in a real browser against a real Daphne whose e-mail goes to a real SMTP
server (aiosmtpd): a tenant owner invites an address, the e-mail's link sets up the
account and the invitee lands in the tenant signed in; expired and revoked links
answer 410; platform staff manage users on /users/."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from tests.alerts.servers import _Sink
from tests.support import free_port, wait_until

from .conftest import ROOT, _wait_port

pytestmark = pytest.mark.chromium
PASSWORD = "accounts-browser-password"
SEED = f"""
from django.contrib.auth import get_user_model
from controlplane.tenancy.models import Membership
from tests.controlplane import helpers as h
User = get_user_model()
User.objects.create_superuser("admin", "admin@example.com", {PASSWORD!r})
shop = h.tenant("shop")
owner = User.objects.create_user("shop-owner", "owner@shop.example.com", {PASSWORD!r})
Membership.objects.create(user=owner, tenant=shop, role="owner")
h.tenant("acme")
"""


@pytest.fixture(scope="module")
def accounts_server(browser_requirements, tmp_path_factory):
    """(base URL, SMTP sink, run(code)): Daphne on a temp SQLite, mail to aiosmtpd."""
    from aiosmtpd.controller import Controller

    sink = _Sink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    var = tmp_path_factory.mktemp("accounts-var")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(SWITCHYARD_VAR_DIR=str(var), SWITCHYARD_SQLITE_PATH=str(var / "db.sqlite3"),
               DJANGO_SETTINGS_MODULE="controlplane.settings", PYTHONPATH=str(ROOT),
               EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend", EMAIL_HOST="127.0.0.1",
               EMAIL_PORT=str(smtp.port), EMAIL_USE_TLS="0", DEFAULT_FROM_EMAIL="switchyard@example.com")

    def run(code: str) -> str:
        return subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, check=True,
                              timeout=300, capture_output=True, text=True).stdout

    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=300)
    run(SEED)
    port = free_port()
    log = open(var / "daphne.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                             "controlplane.asgi:application"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_port(port, proc, timeout=60)
        yield f"http://127.0.0.1:{port}", sink, run
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        smtp.stop()


@pytest.fixture
def new_page(browser, accounts_server):
    contexts = []

    def make(width=1280):
        context = browser.new_context(viewport={"width": width, "height": 900}, base_url=accounts_server[0])
        contexts.append(context)
        pg = context.new_page()
        pg.set_default_timeout(20000)
        return pg
    yield make
    for context in contexts:
        context.close()


def sign_in(page, username, password=PASSWORD):
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))


def both_widths(page, screenshots, name):
    screenshots(page, f"{name}-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshots(page, f"{name}-390")
    page.set_viewport_size({"width": 1280, "height": 900})


def mail_to(sink, address):
    found, _ = wait_until(lambda: [m for m in sink.messages if m["to"] == [address]], 60,
                          f"the e-mail to {address}")
    return found[-1]


def invite(page, email, role="editor"):
    page.goto("/tenants/shop/")
    page.fill("#invite-form input[name=email]", email)
    page.select_option("#invite-form select[name=role]", role)
    page.click("#invite-form button[type=submit]")
    page.wait_for_selector("#invitation-link")
    return page.inner_text("#invitation-link").strip()


def test_an_invitee_follows_the_emailed_link_sets_a_password_and_lands_in_the_tenant(
        accounts_server, new_page, screenshots):
    _, sink, _ = accounts_server
    owner = new_page()
    sign_in(owner, "shop-owner")
    shown = invite(owner, "newcomer@example.com")
    assert "Invitation sent to newcomer@example.com" in owner.inner_text("#invitation-sent")
    both_widths(owner, screenshots, "invitation-sent")

    mail = mail_to(sink, "newcomer@example.com")
    link = re.search(r"(http://\S+/invitations/\S+/)", mail["body"]).group(1)
    assert link == shown and "shop" in mail["subject"]

    invitee = new_page()
    invitee.goto(link)
    assert "You are invited to the tenant shop as editor" in invitee.inner_text("main")
    both_widths(invitee, screenshots, "invitation-accept")
    invitee.fill("#id_username", "newcomer")
    invitee.fill("#id_password", "newcomer-password-123")
    invitee.fill("#id_password2", "newcomer-password-123")
    invitee.click("button[type=submit]")
    invitee.wait_for_url(re.compile(r"/tenants/shop/$"))
    assert "you are now a member of shop" in invitee.inner_text(".messages")
    assert "newcomer" in invitee.inner_text(".topbar .user")
    invitee.goto("/routes/")
    assert invitee.url.endswith("/routes/")  # signed in as a member

    # the owner sees the accepted invitation; the link is used up
    owner.goto("/tenants/shop/")
    assert "accepted by newcomer" in owner.inner_text("#invitations")
    again = new_page()
    response = again.goto(link)
    assert response.status == 410 and "already used" in again.inner_text("main")


def test_expired_and_revoked_links_are_refused_in_the_browser(accounts_server, new_page, screenshots):
    _, sink, run = accounts_server
    owner = new_page()
    sign_in(owner, "shop-owner")
    late_link = invite(owner, "late@example.com", role="viewer")
    run("import datetime as dt; from django.utils import timezone; from controlplane.accounts.models import "
        "Invitation; Invitation.objects.filter(email='late@example.com').update("
        "expires=timezone.now() - dt.timedelta(minutes=1))")
    visitor = new_page()
    response = visitor.goto(late_link)
    assert response.status == 410 and "has expired" in visitor.inner_text("#invitation-gone")
    both_widths(visitor, screenshots, "invitation-expired")

    revoked_link = invite(owner, "revoked@example.com", role="viewer")
    owner.once("dialog", lambda dialog: dialog.accept())
    row = owner.locator("#invitations tr", has_text="revoked@example.com")
    row.locator("button", has_text="Revoke").click()
    owner.wait_for_selector(".messages li.success")
    assert "revoked" in owner.inner_text(".messages")
    response = visitor.goto(revoked_link)
    assert response.status == 410 and "was revoked" in visitor.inner_text("#invitation-gone")


def test_staff_manage_users_and_see_memberships(accounts_server, new_page, screenshots):
    staff = new_page()
    sign_in(staff, "admin")
    staff.click("#main-nav a:has-text('Users')")
    staff.wait_for_url(re.compile(r"/users/$"))
    table = staff.inner_text("#user-table")
    assert "shop-owner" in table and "shop owner" in table
    staff.fill("#id_username", "temp-user")
    staff.fill("#id_email", "temp@example.com")
    staff.click("#user-form button[type=submit]")
    staff.wait_for_url(re.compile(r"/users/\d+/$"))
    assert "temp-user created" in staff.inner_text(".messages")
    staff.click("#send-reset")
    staff.wait_for_selector(".messages li.success")
    assert "password reset link was sent to temp@example.com" in staff.inner_text(".messages")
    mail = mail_to(accounts_server[1], "temp@example.com")
    assert "/reset/" in mail["body"]
    staff.once("dialog", lambda dialog: dialog.accept())
    staff.click("button:has-text('Deactivate')")
    staff.wait_for_selector(".messages li.success")
    assert "deactivated" in staff.inner_text("h1")
    both_widths(staff, screenshots, "user-detail")
    staff.goto("/users/")
    both_widths(staff, screenshots, "users")


def test_two_factor_enrolment_and_sign_in_with_a_code(accounts_server, new_page, screenshots):
    from tests.accounts.test_two_factor import totp

    accounts_server[2](f"from django.contrib.auth import get_user_model; "
                       f"get_user_model().objects.create_user('mfa-user', 'mfa@example.com', {PASSWORD!r})")
    user = new_page()
    sign_in(user, "mfa-user")
    user.click("#account-link")
    user.wait_for_url(re.compile(r"/account/two-factor/$"))
    assert user.locator("#totp-qr").evaluate("img => img.complete && img.naturalWidth > 0")  # CSP allows it
    both_widths(user, screenshots, "two-factor-enrol")
    secret = user.inner_text("#totp-secret").strip()
    user.fill("#id_code", totp(secret))
    user.click("button:has-text('Turn on two-factor')")
    user.wait_for_selector("#recovery-codes")
    codes = user.inner_text("#recovery-codes pre").split()
    assert len(codes) == 10
    both_widths(user, screenshots, "two-factor-recovery-codes")
    user.click("button:has-text('Sign out')")
    user.wait_for_url(re.compile(r"/login/$"))

    user.fill("#id_username", "mfa-user")
    user.fill("#id_password", PASSWORD)
    user.click("button[type=submit]")
    user.wait_for_url(re.compile(r"/login/code/$"))
    both_widths(user, screenshots, "two-factor-code")
    user.fill("#id_code", "000000" if totp(secret, 1) != "000000" else "111111")
    user.click("button:has-text('Verify')")
    assert "not valid" in user.inner_text("main")
    user.fill("#id_code", totp(secret, 1))
    user.click("button:has-text('Verify')")
    user.wait_for_url(re.compile(r"/$"))
    assert "mfa-user" in user.inner_text(".topbar .user")
