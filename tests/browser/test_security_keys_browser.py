"""Security keys (WebAuthn) in a real browser against a real Daphne: Chrome's virtual
authenticator (DevTools protocol, WebAuthn domain) stands in for the USB key. A user adds
a key by name on their two-factor page, signs out, signs in with password + key; after
removing the key, signing in offers it no more and asks for the app's code. At an IP
address (where browsers refuse WebAuthn) no key button is shown."""
from __future__ import annotations

import re

import pytest

from .conftest import signed_in

pytestmark = pytest.mark.chromium
PASSWORD = "security-key-password"
SEED_PASSWORD = "browser-test-password"  # the seeded platform admin's (tests/browser/seed.py)


def both_widths(page, screenshots, name):
    screenshots(page, f"{name}-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshots(page, f"{name}-390")
    page.set_viewport_size({"width": 1280, "height": 900})


def localhost(url: str) -> str:
    """The same server by host name: browsers use WebAuthn only at a host name."""
    return url.replace("://127.0.0.1:", "://localhost:")


def virtual_authenticator(context, page):
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "usb", "hasResidentKey": False, "hasUserVerification": True,
        "isUserVerified": True, "automaticPresenceSimulation": True}})
    return cdp, added["authenticatorId"]


def sign_in_password(page, username):
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")


def test_a_security_key_is_added_used_to_sign_in_and_removed(browser, live_server_url, run_django, screenshots):
    from tests.accounts.test_two_factor import totp

    run_django("from django.contrib.auth import get_user_model\n"
               f"get_user_model().objects.create_user('key-user', 'key@example.com', {PASSWORD!r})")
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=localhost(live_server_url))
    try:
        page = context.new_page()
        page.set_default_timeout(30000)
        cdp, authenticator = virtual_authenticator(context, page)
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        sign_in_password(page, "key-user")
        page.wait_for_url(re.compile(r"/$"))
        page.click("#account-link")
        page.wait_for_url(re.compile(r"/account/two-factor/$"))
        assert "No security keys yet." in page.inner_text("#security-keys")
        page.fill("#id_key_name", "blue key")
        page.click("#key-add")
        page.wait_for_selector("#recovery-codes")  # the first second factor comes with recovery codes
        assert "Security key added." in page.inner_text(".messages")
        assert page.locator("#key-table tr[data-key='blue key']").count() == 1
        assert len(page.inner_text("#recovery-codes pre").split()) == 10
        assert len(cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]) == 1
        stored = run_django("from allauth.mfa.models import Authenticator\n"
                            "print([a.data['name'] for a in Authenticator.objects.filter("
                            "user__username='key-user', type='webauthn')])")
        assert stored.strip().splitlines()[-1] == "['blue key']"

        # sign out; password + key signs in
        page.click("button:has-text('Sign out')")
        page.wait_for_url(re.compile(r"/login/$"))
        sign_in_password(page, "key-user")
        page.wait_for_url(re.compile(r"/login/code/$"))
        both_widths(page, screenshots, "two-factor-key-step")
        page.click("#key-use")
        page.wait_for_url(re.compile(r"/$"))
        assert "key-user" in page.inner_text(".topbar .user")
        page.goto("/account/two-factor/")
        row = page.locator("#key-table tr[data-key='blue key']")
        assert "never" not in row.inner_text()  # last used: now
        # the authenticator app next to the key
        secret = page.inner_text("#totp-secret").strip()
        page.fill("#id_code", totp(secret))
        page.click("button:has-text('Turn on two-factor')")
        page.wait_for_selector("#totp")
        page.goto("/account/two-factor/")
        both_widths(page, screenshots, "two-factor-keys")
        # platform staff see it on the user's page (where they could reset it)
        pk = run_django("from django.contrib.auth import get_user_model\n"
                        "print(get_user_model().objects.get(username='key-user').pk)").strip().splitlines()[-1]
        staff_context, staff = signed_in(browser, live_server_url, "admin", SEED_PASSWORD)
        try:
            staff.goto(f"/users/{pk}/")
            assert staff.inner_text("#two-factor-state") == "app and 1 security key"
            assert staff.locator("#reset-two-factor").is_visible()
            both_widths(staff, screenshots, "user-detail-two-factor")
        finally:
            staff_context.close()

        # remove the key: it no longer signs in (the code step offers no key), the code does
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#key-table tr[data-key='blue key'] button:has-text('Remove')")
        page.wait_for_selector(".messages li.success")
        assert "removed" in page.inner_text(".messages")
        assert page.locator("#key-table tr[data-key='blue key']").count() == 0
        page.click("button:has-text('Sign out')")
        page.wait_for_url(re.compile(r"/login/$"))
        sign_in_password(page, "key-user")
        page.wait_for_url(re.compile(r"/login/code/$"))
        assert page.locator("#key-use").count() == 0
        # a key answer posted anyway is refused: back to the password step, not signed in
        response = page.request.post("/login/key/", form={"credential": "{}"},
                                     headers={"X-CSRFToken": csrf_token(context)})
        assert re.search(r"/login/$", response.url), response.url
        assert re.search(r"/login/\?next=", page.request.get("/account/two-factor/").url)
        page.goto("/login/code/")  # the password step is still pending: the app's code signs in
        page.fill("#id_code", totp(secret, 1))
        page.click("button:has-text('Verify')")
        page.wait_for_url(re.compile(r"/$"))
        assert not [e for e in errors if "Content Security Policy" in e], errors
    finally:
        context.close()


def csrf_token(context) -> str:
    return next(c["value"] for c in context.cookies() if c["name"] == "csrftoken")


def test_no_key_button_at_an_ip_address(browser, live_server_url, run_django):
    run_django("from django.contrib.auth import get_user_model\n"
               f"get_user_model().objects.create_user('ip-user', 'ip@example.com', {PASSWORD!r})")
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live_server_url)
    try:
        page = context.new_page()
        page.set_default_timeout(30000)
        sign_in_password(page, "ip-user")
        page.wait_for_url(re.compile(r"/$"))
        page.goto("/account/two-factor/")
        page.wait_for_selector("#key-unavailable", state="visible")
        assert not page.locator("#key-add").is_visible() and not page.locator("#id_key_name").is_visible()
    finally:
        context.close()
