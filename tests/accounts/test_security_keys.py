"""Security keys (WebAuthn) over HTTP: a software key (tests/accounts/softkey.py)
answers the options the pages hand out. A key is added by name, signs in instead of a
code, each answer works once, a removed key no longer signs in, nobody removes another
user's key, the platform requirement keeps the last one, hostile input is refused
without a 500, and the login throttle holds on the key step."""
import json
import re

import pytest
from allauth.mfa.models import Authenticator
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from controlplane.audit.models import AuditEntry
from tests.accounts.softkey import SoftKey, allowed_ids

pytestmark = pytest.mark.django_db
PASSWORD = "security key password"
User = get_user_model()
PAGE = reverse("dashboard:two_factor")
KEY_STEP = reverse("dashboard:login_key")


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", "alice@example.com", PASSWORD)


def client() -> Client:
    """Browsers offer keys only at a host name (here localhost, an allowed host)."""
    return Client(HTTP_HOST="localhost")


def password_step(c, username="alice"):
    return c.post(reverse("dashboard:login"), {"username": username, "password": PASSWORD})


def signed_in(username="alice") -> Client:
    c = client()
    assert password_step(c, username).status_code == 302
    return c


def creation_options(c) -> dict:
    page = c.get(PAGE).content.decode()
    found = re.search(r'<script id="webauthn-creation-options" type="application/json">(.*?)</script>', page, re.S)
    assert found, "the page offers no security key"
    return json.loads(found.group(1))


def add_key(c, key: SoftKey, name: str):
    return c.post(PAGE, {"action": "add_key", "name": name, "credential": key.register(creation_options(c))})


def key_options(c) -> dict:
    r = c.get(KEY_STEP, HTTP_ACCEPT="application/json")
    assert r.status_code == 200, r.content
    return r.json()["request_options"]


def is_signed_in(c) -> bool:
    return c.get(reverse("dashboard:routes")).status_code == 200


def test_a_key_is_added_by_name_and_signs_in_instead_of_a_code(alice):
    c = signed_in()
    key = SoftKey()
    r = add_key(c, key, "blue key")
    assert r.status_code == 302
    page = c.get(PAGE).content.decode()
    assert 'id="recovery-codes"' in page  # the first second factor comes with recovery codes
    assert '<td class="key-name">blue key</td>' in page
    assert Authenticator.objects.filter(user=alice, type="webauthn").count() == 1
    assert AuditEntry.objects.filter(object_type="user", action="add_security_key").exists()

    browser = client()
    r = password_step(browser)
    assert r.status_code == 302 and r.url == reverse("dashboard:login_code")
    assert b'id="key-use"' in browser.get(r.url).content
    assert not is_signed_in(browser)
    options = key_options(browser)
    assert allowed_ids(options) == {key.credential_id}
    assert options["publicKey"]["rpId"] == "localhost"
    r = browser.post(KEY_STEP, {"credential": key.assert_(options)})
    assert r.status_code == 302 and r.url == reverse("dashboard:overview")
    assert is_signed_in(browser)
    assert Authenticator.objects.get(user=alice, type="webauthn").last_used_at is not None


def test_a_key_answer_signs_in_once(alice):
    key = SoftKey()
    add_key(signed_in(), key, "blue key")
    first = client()
    password_step(first)
    answer = key.assert_(key_options(first))
    assert first.post(KEY_STEP, {"credential": answer}).status_code == 302
    replay = client()
    password_step(replay)
    key_options(replay)  # a fresh challenge
    r = replay.post(KEY_STEP, {"credential": answer})
    assert r.status_code == 200 and b"not accepted" in r.content
    assert not is_signed_in(replay)


def test_a_key_from_another_origin_is_refused(alice):
    key = SoftKey()
    add_key(signed_in(), key, "blue key")
    phished = SoftKey.__new__(SoftKey)
    phished.__dict__.update(key.__dict__, origin="https://switchyard.evil.example")
    c = client()
    password_step(c)
    assert c.post(KEY_STEP, {"credential": phished.assert_(key_options(c))}).status_code == 200
    assert not is_signed_in(c)


def test_a_removed_key_no_longer_signs_in(alice):
    c = signed_in()
    blue, green = SoftKey(), SoftKey()
    add_key(c, blue, "blue key")
    add_key(c, green, "green key")
    blue_row = Authenticator.objects.get(user=alice, type="webauthn", data__name="blue key")
    r = c.post(PAGE, {"action": "remove_key", "key": blue_row.pk})
    assert r.status_code == 302
    assert 'data-key="blue key"' not in c.get(PAGE).content.decode()
    assert AuditEntry.objects.filter(object_type="user", action="remove_security_key").exists()

    browser = client()
    password_step(browser)
    options = key_options(browser)
    assert allowed_ids(options) == {green.credential_id}
    r = browser.post(KEY_STEP, {"credential": blue.assert_(options)})
    assert r.status_code == 200 and not is_signed_in(browser)
    assert browser.post(KEY_STEP, {"credential": green.assert_(key_options(browser))}).status_code == 302
    assert is_signed_in(browser)


def test_nobody_removes_another_users_key(alice):
    key = SoftKey()
    add_key(signed_in(), key, "blue key")
    row = Authenticator.objects.get(user=alice, type="webauthn")
    User.objects.create_user("mallory", "m@example.com", PASSWORD)
    mallory = signed_in("mallory")
    r = mallory.post(PAGE, {"action": "remove_key", "key": row.pk})
    assert r.status_code == 200 and b"no such security key" in r.content
    assert Authenticator.objects.filter(pk=row.pk).exists()
    # nor signs in with it: mallory's pending sign-in checks only mallory's keys
    other = client()
    password_step(other, "mallory")
    assert other.get(KEY_STEP).status_code == 409


def test_the_platform_requirement_keeps_the_last_key(alice, settings):
    settings.SWITCHYARD_MFA_REQUIRED = "all"
    c = signed_in()
    assert c.get(reverse("dashboard:routes")).url == PAGE  # sent to enrol
    add_key(c, SoftKey(), "blue key")
    assert is_signed_in(c)  # a key satisfies the requirement
    row = Authenticator.objects.get(user=alice, type="webauthn")
    r = c.post(PAGE, {"action": "remove_key", "key": row.pk})
    assert r.status_code == 200 and b"requires two-factor" in r.content
    assert Authenticator.objects.filter(pk=row.pk).exists()


@pytest.mark.parametrize("name, credential, message", [
    ("x" * 65, None, b"at most 64 characters"),
    ("evil\u202ename", None, b"letters, digits"),
    ("", None, b"give the key a name"),
    ("ok", "{" * 40000, b"too large"),
    ("ok", "not json", b"not valid"),
    ("ok", "[1, 2]", b"not valid"),
    ("ok", json.dumps({"id": "AA", "rawId": "AA", "type": "public-key", "response": {}}), b"did not match"),
])
def test_hostile_key_input_is_refused_without_a_server_error(alice, name, credential, message):
    c = signed_in()
    creation_options(c)
    r = c.post(PAGE, {"action": "add_key", "name": name, "credential": credential or SoftKey().register(
        creation_options(c))})
    errors = re.search(rb'<ul class="errorlist nonfield".*?</ul>', r.content, re.S)
    assert r.status_code == 200 and errors and message in errors.group(0), errors
    assert not Authenticator.objects.filter(user=alice).exists()


def test_a_key_registered_for_another_site_is_refused(alice):
    c = signed_in()
    wrong = SoftKey(origin="https://other.example", rp_id="other.example")
    r = add_key(c, wrong, "other")
    assert r.status_code == 200 and b"did not match" in r.content
    assert not Authenticator.objects.filter(user=alice).exists()


def test_the_login_throttle_holds_on_the_key_step(alice, settings):
    settings.SWITCHYARD_LOGIN_MAX_FAILURES = 3
    key = SoftKey()
    add_key(signed_in(), key, "blue key")
    attacker = client()
    password_step(attacker)
    for _ in range(3):
        key_options(attacker)
        r = attacker.post(KEY_STEP, {"credential": SoftKey().assert_(key_options(attacker))})
        assert r.status_code == 200 and b"not accepted" in r.content
    r = attacker.post(KEY_STEP, {"credential": key.assert_(key_options(attacker))})
    assert r.status_code == 429 and b"Too many failed sign-in attempts" in r.content
    assert not is_signed_in(attacker)
    assert password_step(client()).status_code == 429  # and the password step refuses the username too
