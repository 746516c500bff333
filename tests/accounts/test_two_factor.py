"""Two-factor sign-in on the dashboard's /login/: TOTP enrolment (the code computed
here from the key the page shows, RFC 6238), sign-in with a code and with a recovery
code, the login throttle on the code step, and SWITCHYARD_MFA_REQUIRED=staff."""
import base64
import hashlib
import hmac
import re
import struct
import time

import pytest
from allauth.mfa.models import Authenticator
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from controlplane.audit.models import AuditEntry

pytestmark = pytest.mark.django_db
PASSWORD = "two factor password"
User = get_user_model()


def totp(secret: str, step_offset: int = 0) -> str:
    counter = int(time.time()) // 30 + step_offset
    digest = hmac.new(base64.b32decode(secret), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = (struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 10 ** 6
    return f"{value:06d}"


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", "alice@example.com", PASSWORD)


def password_step(client, username="alice", password=PASSWORD):
    return client.post(reverse("dashboard:login"), {"username": username, "password": password})


def enrol(client) -> tuple[str, list[str]]:
    page = client.get(reverse("dashboard:two_factor")).content.decode()
    secret = re.search(r'id="totp-secret">([A-Z2-7=]+)<', page).group(1)
    assert 'src="data:image/svg+xml;base64,' in page  # the QR code, allowed by the CSP (img-src data:)
    r = client.post(reverse("dashboard:two_factor"), {"action": "enable", "code": totp(secret)})
    assert r.status_code == 302
    page = client.get(reverse("dashboard:two_factor")).content.decode()
    codes = re.search(r'id="recovery-codes">.*?<pre class="mono">(.*?)</pre>', page, re.S).group(1).split()
    assert len(codes) == 10
    assert "recovery-codes" not in client.get(reverse("dashboard:two_factor")).content.decode()  # shown once
    return secret, codes


def test_enrolment_stores_the_key_encrypted_and_asks_for_a_code_at_sign_in(alice):
    c = Client()
    assert password_step(c).status_code == 302
    c.get(reverse("dashboard:two_factor"))
    bad = c.post(reverse("dashboard:two_factor"), {"action": "enable", "code": "000000"})
    assert b"not valid" in bad.content and not Authenticator.objects.filter(user=alice).exists()
    secret, codes = enrol(c)
    stored = Authenticator.objects.get(user=alice, type="totp").data["secret"]
    assert secret not in stored
    assert AuditEntry.objects.filter(object_type="user", action="enable_2fa").exists()

    browser = Client()
    r = password_step(browser)
    assert r.status_code == 302 and r.url == reverse("dashboard:login_code")
    assert browser.get(reverse("dashboard:routes")).status_code == 302  # not signed in yet
    wrong = browser.post(reverse("dashboard:login_code"), {"code": "123456" if totp(secret, 1) != "123456" else "654321"})
    assert wrong.status_code == 200 and b"not valid" in wrong.content
    code = totp(secret, 1)  # the enrolment used the current step's code
    r = browser.post(reverse("dashboard:login_code"), {"code": code})
    assert r.status_code == 302 and r.url == reverse("dashboard:overview")
    assert browser.get(reverse("dashboard:routes")).status_code == 200
    # the same code does not sign in twice
    again = Client()
    password_step(again)
    assert again.post(reverse("dashboard:login_code"), {"code": code}).status_code == 200
    assert again.get(reverse("dashboard:routes")).status_code == 302


def test_a_recovery_code_signs_in_once(alice):
    c = Client()
    password_step(c)
    _, codes = enrol(c)
    browser = Client()
    password_step(browser)
    assert browser.post(reverse("dashboard:login_code"), {"code": codes[0]}).status_code == 302
    assert browser.get(reverse("dashboard:routes")).status_code == 200
    page = browser.get(reverse("dashboard:two_factor")).content.decode()
    assert "9 recovery codes left" in page
    other = Client()
    password_step(other)
    assert other.post(reverse("dashboard:login_code"), {"code": codes[0]}).status_code == 200
    assert other.get(reverse("dashboard:routes")).status_code == 302


def test_the_login_throttle_holds_on_the_code_step(alice, settings):
    settings.SWITCHYARD_LOGIN_MAX_FAILURES = 3
    c = Client()
    password_step(c)
    secret, _ = enrol(c)
    attacker = Client()
    assert password_step(attacker).status_code == 302
    for _ in range(3):
        r = attacker.post(reverse("dashboard:login_code"), {"code": "000000"})
        assert r.status_code == 200
    r = attacker.post(reverse("dashboard:login_code"), {"code": totp(secret, 1)})
    assert r.status_code == 429 and b"Too many failed sign-in attempts" in r.content
    assert attacker.get(reverse("dashboard:routes")).status_code == 302
    # and the password step refuses the username too
    assert password_step(Client()).status_code == 429


def test_staff_must_enrol_when_the_platform_requires_it(alice, settings):
    settings.SWITCHYARD_MFA_REQUIRED = "staff"
    User.objects.create_user("op", "op@example.com", PASSWORD, is_staff=True)
    staff = Client()
    assert password_step(staff, "op").status_code == 302
    r = staff.get(reverse("dashboard:routes"))
    assert r.status_code == 302 and r.url == reverse("dashboard:two_factor")
    api = staff.get("/api/v1/routes/")
    assert api.status_code == 403 and "two-factor" in api.json()["detail"]
    assert b'id="mfa-required"' in staff.get(reverse("dashboard:two_factor")).content
    # a tenant member is not affected
    member = Client()
    password_step(member)
    assert member.get(reverse("dashboard:routes")).status_code == 200
    # once enrolled, the staff user works as before and cannot turn it off
    secret, _ = enrol(staff)
    assert staff.get(reverse("dashboard:routes")).status_code == 200
    r = staff.post(reverse("dashboard:two_factor"), {"action": "disable", "code": totp(secret, 1)})
    assert b"requires two-factor" in r.content
    assert Authenticator.objects.filter(user__username="op", type="totp").exists()


def test_the_admin_sign_in_sends_two_factor_accounts_to_the_dashboard(alice):
    User.objects.create_user("op", "op@example.com", PASSWORD, is_staff=True)
    c = Client()
    password_step(c, "op")
    enrol(c)
    r = Client().post("/admin/login/", {"username": "op", "password": PASSWORD, "next": "/admin/"})
    assert r.status_code == 200 and b"sign in at /login/ first" in r.content
    assert Client().get("/admin/").status_code == 302


def test_a_user_may_turn_two_factor_off_with_a_code(alice):
    c = Client()
    password_step(c)
    secret, _ = enrol(c)
    r = c.post(reverse("dashboard:two_factor"), {"action": "disable", "code": totp(secret, 1)})
    assert r.status_code == 302
    assert not Authenticator.objects.filter(user=alice).exists()
    assert password_step(Client()).url == reverse("dashboard:overview")
