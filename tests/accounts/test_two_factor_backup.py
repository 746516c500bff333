"""A backup taken with passwords keeps two-factor too: a restored user still needs
their app code or key after the password (never the password alone), with the app
secret still encrypted in the file; a backup without passwords holds no two-factor
secrets; a secret that does not decrypt stops the restore."""
import json

import pytest
from allauth.mfa.models import Authenticator
from django.contrib.auth import get_user_model
from django.urls import reverse

from controlplane.configio import backup
from tests.accounts.softkey import SoftKey
from tests.accounts.test_security_keys import KEY_STEP, PASSWORD, add_key, client, key_options, password_step
from tests.accounts.test_security_keys import is_signed_in, signed_in
from tests.accounts.test_two_factor import enrol

pytestmark = pytest.mark.django_db
User = get_user_model()


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", "alice@example.com", PASSWORD)


def test_a_restored_user_still_needs_the_second_factor(alice):
    c = signed_in()
    secret, codes = enrol(c)
    key = SoftKey()
    add_key(c, key, "blue key")
    data = json.loads(json.dumps(backup.backup(with_passwords=True)))
    assert {row["type"] for row in data["two_factor"]} == {"totp", "recovery_codes", "webauthn"}
    assert secret not in json.dumps(data)  # encrypted as stored
    assert "two_factor" not in backup.backup()  # secrets only when asked

    User.objects.all().delete()  # the users are lost with the database
    restored = backup.restore(data)
    assert restored.counts["two-factor authenticators"] == 3
    browser = client()
    r = password_step(browser)
    assert r.status_code == 302 and r.url == reverse("dashboard:login_code")  # not signed in by the password
    assert not is_signed_in(browser)
    assert browser.post(KEY_STEP, {"credential": key.assert_(key_options(browser))}).status_code == 302
    assert is_signed_in(browser)
    other = client()
    password_step(other)
    assert other.post(reverse("dashboard:login_code"), {"code": codes[0]}).status_code == 302


def test_a_two_factor_secret_that_does_not_decrypt_stops_the_restore(alice):
    enrol(signed_in())
    data = json.loads(json.dumps(backup.backup(with_passwords=True)))
    for row in data["two_factor"]:
        if row["type"] == "totp":
            row["data"]["secret"] = "not-encrypted-with-this-key"
    User.objects.all().delete()
    with pytest.raises(backup.RestoreError, match="two-factor secret of user alice"):
        backup.restore(data)
    assert not User.objects.exists() and not Authenticator.objects.exists()  # nothing restored
