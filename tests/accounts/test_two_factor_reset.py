"""A user who lost their app, keys and recovery codes: platform staff press **Reset
two-factor** on the user's page; the user signs in with the password and enrols again.
Only staff, never on themselves, audited."""
import pytest
from allauth.mfa.models import Authenticator
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from controlplane.audit.models import AuditEntry
from tests.accounts.test_security_keys import PASSWORD, add_key, client, password_step, signed_in
from tests.accounts.softkey import SoftKey
from tests.accounts.test_two_factor import enrol

pytestmark = pytest.mark.django_db
User = get_user_model()


@pytest.fixture
def people(db):
    alice = User.objects.create_user("alice", "alice@example.com", PASSWORD)
    op = User.objects.create_user("op", "op@example.com", PASSWORD, is_staff=True)
    return alice, op


def test_staff_reset_a_users_two_factor(people):
    alice, op = people
    c = signed_in()
    enrol(c)
    add_key(c, SoftKey(), "blue key")
    assert password_step(client()).url == reverse("dashboard:login_code")

    staff = Client()
    staff.force_login(op)
    page = staff.get(reverse("dashboard:user", args=[alice.pk])).content.decode()
    assert '<dd id="two-factor-state">app and 1 security key</dd>' in page and 'id="reset-two-factor"' in page
    r = staff.post(reverse("dashboard:user_two_factor_reset", args=[alice.pk]))
    assert r.status_code == 302
    assert not Authenticator.objects.filter(user=alice).exists()
    assert AuditEntry.objects.filter(object_type="user", action="reset_2fa", actor="op").exists()
    page = staff.get(reverse("dashboard:user", args=[alice.pk])).content.decode()
    assert '<dd id="two-factor-state">off</dd>' in page and 'id="reset-two-factor"' not in page
    r = password_step(client())
    assert r.status_code == 302 and r.url == reverse("dashboard:overview")  # the password alone, again


def test_nobody_else_resets_two_factor(people):
    alice, op = people
    enrol(signed_in())
    member = Client()
    User.objects.create_user("mallory", "m@example.com", PASSWORD)
    password_step(member, "mallory")
    assert member.post(reverse("dashboard:user_two_factor_reset", args=[alice.pk])).status_code == 404
    assert Authenticator.objects.filter(user=alice).exists()
    # staff do not skip their own code this way
    staff = signed_in("op")
    enrol(staff)
    staff = Client()
    staff.force_login(op)
    r = staff.post(reverse("dashboard:user_two_factor_reset", args=[op.pk]), follow=True)
    assert b"turn your own two-factor off on your two-factor page" in r.content
    assert Authenticator.objects.filter(user=op, type="totp").exists()


def test_the_api_resets_two_factor_for_staff_only(people):
    from rest_framework.test import APIClient

    from controlplane.tenancy.models import ApiToken

    def api_as(user):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user)[1]}")
        return client

    alice, op = people
    enrol(signed_in())
    url = f"/api/v1/users/{alice.pk}/reset-two-factor/"
    assert api_as(alice).post(url).status_code in (403, 404)  # not staff
    assert Authenticator.objects.filter(user=alice).exists()
    staff = api_as(op)
    r = staff.post(url)
    assert r.status_code == 200 and r.json() == {"two_factor": "off"}
    assert not Authenticator.objects.filter(user=alice).exists()
    assert AuditEntry.objects.filter(action="reset_2fa", object_id=str(alice.pk)).exists()
    again = staff.post(url)
    assert again.status_code == 400 and "has no two-factor" in again.content.decode()
    assert staff.post(f"/api/v1/users/{op.pk}/reset-two-factor/").status_code == 400  # not on yourself
    schema = staff.get("/api/v1/schema/?format=json").json()
    assert "/api/v1/users/{id}/reset-two-factor/" in schema["paths"]
