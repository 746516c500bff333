"""Tenant owners invite people by e-mail: the one-time link arrives through a real SMTP
server, is shown to the owner once, sets up the account (or joins an existing one) and
makes the invitee a member; expired, revoked and used links answer 410. An owner never
learns whether an address or a username has an account elsewhere."""
import datetime as dt
import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from controlplane.accounts.models import Invitation
from controlplane.audit.models import AuditEntry
from controlplane.tenancy.models import Membership, hash_token
from tests.api.conftest import client_for
from tests.support import wait_until

pytestmark = pytest.mark.django_db
BASE = "/api/v1"
User = get_user_model()


def invite(api, email, role="editor", tenant="alpha"):
    r = api.post(f"{BASE}/invitations/", {"tenant": tenant, "email": email, "role": role}, format="json")
    assert r.status_code == 201, r.json()
    return r.json()


def path_of(link: str) -> str:
    return re.sub(r"^http://testserver", "", link)


def test_an_invitation_email_leads_to_a_new_member(world, smtp_server):
    owner_api = client_for(world["a"].users["owner"])
    created = invite(owner_api, "newbie@example.com")
    assert created["email_sent"] is True and created["status"] == "pending"
    wait_until(lambda: smtp_server.messages, 30, "the invitation e-mail")
    mail = smtp_server.messages[0]
    assert mail["to"] == ["newbie@example.com"] and "alpha" in mail["subject"]
    assert created["link"] in mail["body"]
    token = created["link"].rstrip("/").rsplit("/", 1)[1]
    assert Invitation.objects.get(pk=created["id"]).token_hash == hash_token(token)  # only the hash is stored
    assert not Invitation.objects.filter(token_hash=token).exists()

    browser = Client()
    page = browser.get(path_of(created["link"]))
    assert page.status_code == 200 and b"Create account and join" in page.content
    r = browser.post(path_of(created["link"]), {"username": "newbie", "password": "a fine new password",
                                                "password2": "a fine new password"})
    assert r.status_code == 302 and r.url == reverse("dashboard:tenant", args=["alpha"])
    newbie = User.objects.get(username="newbie")
    assert newbie.email == "newbie@example.com"
    assert Membership.objects.get(user=newbie, tenant=world["a"].tenant).role == "editor"
    assert browser.get(reverse("dashboard:tenant", args=["alpha"])).status_code == 200  # signed in
    assert Client().login(username="newbie", password="a fine new password")
    # used: the link is refused from now on
    assert Client().get(path_of(created["link"])).status_code == 410
    listed = owner_api.get(f"{BASE}/invitations/").json()["results"]
    assert listed[0]["status"] == "accepted"
    actions = set(AuditEntry.objects.filter(object_type="invitation").values_list("action", flat=True))
    assert actions == {"invite", "accept"}


def test_an_existing_account_signs_in_and_joins(world, smtp_server):
    viewer = world["b"].users["viewer"]
    viewer.email = "bv@example.com"
    viewer.set_password("beta viewer password")
    viewer.save()
    created = invite(client_for(world["a"].users["owner"]), "BV@example.com", role="viewer")
    link = path_of(created["link"])
    anonymous = Client().get(link)
    assert b"Sign in to accept" in anonymous.content and b"Create account" not in anonymous.content
    browser = Client()
    r = browser.post(reverse("dashboard:login") + f"?next={link}",
                     {"username": "beta-viewer", "password": "beta viewer password", "next": link})
    assert r.status_code == 302 and r.url == link
    assert browser.post(link).status_code == 302
    assert Membership.objects.get(user=viewer, tenant=world["a"].tenant).role == "viewer"


def test_the_owner_learns_nothing_about_existing_accounts(world, smtp_server):
    viewer = world["b"].users["viewer"]
    viewer.email = "known@example.com"
    viewer.save()
    owner_api = client_for(world["a"].users["owner"])
    known, unknown = invite(owner_api, "known@example.com"), invite(owner_api, "unknown@example.com")
    volatile = {"id", "email", "link", "created", "expires"}
    assert {k: v for k, v in known.items() if k not in volatile} == \
           {k: v for k, v in unknown.items() if k not in volatile}
    # adding by username: another tenant's user and a name nobody has get the same answer
    other = owner_api.post(f"{BASE}/members/", {"tenant": "alpha", "user": "beta-viewer", "role": "viewer"},
                           format="json")
    nobody = owner_api.post(f"{BASE}/members/", {"tenant": "alpha", "user": "nobody-at-all", "role": "viewer"},
                            format="json")
    assert other.status_code == nobody.status_code == 400
    assert other.json()["user"] == [m.replace("nobody-at-all", "beta-viewer") for m in nobody.json()["user"]]
    assert "invite them by e-mail" in nobody.json()["user"][0]
    assert not Membership.objects.filter(user=viewer, tenant=world["a"].tenant).exists()


def test_expired_and_revoked_invitations_are_refused(world, smtp_server):
    owner_api = client_for(world["a"].users["owner"])
    expired = invite(owner_api, "late@example.com")
    Invitation.objects.filter(pk=expired["id"]).update(expires=timezone.now() - dt.timedelta(minutes=1))
    page = Client().get(path_of(expired["link"]))
    assert page.status_code == 410 and b"expired" in page.content
    r = Client().post(path_of(expired["link"]), {"username": "late", "password": "a fine new password",
                                                 "password2": "a fine new password"})
    assert r.status_code == 410 and not User.objects.filter(username="late").exists()

    revoked = invite(owner_api, "gone@example.com")
    r = owner_api.post(f"{BASE}/invitations/{revoked['id']}/revoke/")
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    page = Client().get(path_of(revoked["link"]))
    assert page.status_code == 410 and b"revoked" in page.content
    assert Client().get("/invitations/not-a-real-token/").status_code == 404


def test_invitations_are_scoped_to_the_tenants_owners(world, smtp_server):
    created = invite(client_for(world["a"].users["owner"]), "x@example.com")
    beta_owner = client_for(world["b"].users["owner"])
    assert beta_owner.get(f"{BASE}/invitations/").json()["results"] == []
    assert beta_owner.get(f"{BASE}/invitations/{created['id']}/").status_code == 404
    assert beta_owner.post(f"{BASE}/invitations/{created['id']}/revoke/").status_code == 404
    r = beta_owner.post(f"{BASE}/invitations/", {"tenant": "alpha", "email": "y@example.com"}, format="json")
    assert r.status_code == 400 and "tenant" in r.json()  # another tenant's slug is unknown to them
    editor = client_for(world["a"].users["editor"])
    assert editor.post(f"{BASE}/invitations/", {"tenant": "alpha", "email": "y@example.com"},
                       format="json").status_code == 403
    assert editor.get(f"{BASE}/invitations/").json()["results"] == []
    assert not Invitation.objects.filter(email="y@example.com").exists()


def test_the_tenant_page_invites_shows_the_link_once_and_revokes(world, client, smtp_server):
    client.force_login(world["a"].users["owner"])
    r = client.post(reverse("dashboard:invitation_create", args=["alpha"]), {"email": "pat@example.com",
                                                                          "role": "viewer"})
    assert r.status_code == 302
    page = client.get(reverse("dashboard:tenant", args=["alpha"])).content.decode()
    link = re.search(r'id="invitation-link">([^<]+)<', page).group(1)
    assert "Invitation sent to pat@example.com" in page and "/invitations/" in link
    assert link not in client.get(reverse("dashboard:tenant", args=["alpha"])).content.decode()
    wait_until(lambda: smtp_server.messages, 30, "the invitation e-mail")
    assert link in smtp_server.messages[0]["body"]
    inv = Invitation.objects.get(email="pat@example.com")
    assert client.post(reverse("dashboard:invitation_revoke", args=["alpha", inv.pk])).status_code == 302
    assert Client().get(path_of(link)).status_code == 410
    bad = client.post(reverse("dashboard:invitation_create", args=["alpha"]), {"email": "not-an-address",
                                                                            "role": "viewer"})
    assert bad.status_code == 200 and b'data-field-errors="email"' in bad.content


def test_a_failed_email_still_gives_the_owner_the_link(world, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # nothing listens there
    created = invite(client_for(world["a"].users["owner"]), "offline@example.com")
    assert created["email_sent"] is False and created["email_error"]
    assert Client().get(path_of(created["link"])).status_code == 200
