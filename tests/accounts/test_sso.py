"""The single sign-on rules without a browser (the browser journeys against a real
provider are in tests/browser/test_sso_browser.py): which account an identity signs in
as, the claim mapping granting and removing staff and memberships, the
``SWITCHYARD_TENANT_ROLES`` syntax, and local passwords switched off."""
import pytest
from allauth.socialaccount.models import SocialAccount, SocialLogin
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.test import Client

from controlplane.accounts import services, sso
from controlplane.audit.services import Actor
from controlplane.tenancy.models import Membership
from tests.controlplane import helpers as h

pytestmark = pytest.mark.django_db
User = get_user_model()
PASSWORD = "sso unit password"


def login(uid="sub-1", email="pat@example.com", verified=True, username="pat", groups=()):
    account = SocialAccount(provider=sso.PROVIDER_ID, uid=uid, extra_data={"userinfo": {
        "sub": uid, "email": email, "email_verified": verified, "preferred_username": username,
        "groups": list(groups)}})
    return SocialLogin(account=account)


@pytest.fixture
def mapped(settings):
    settings.SWITCHYARD_OIDC_CLAIM = "groups"
    settings.SWITCHYARD_OIDC_STAFF_VALUES = ["admins"]
    settings.SWITCHYARD_OIDC_TENANT_ROLES = "devs:shop:editor,leads:shop:owner,ops:acme:viewer,a:b:c:acme:owner"
    return {"shop": h.tenant("shop"), "acme": h.tenant("acme"), "blog": h.tenant("blog")}


def roles(user):
    return {m.tenant.slug: m.role for m in Membership.objects.filter(user=user).select_related("tenant")}


def test_tenant_rules_take_the_last_two_fields_and_reject_bad_items():
    rules = sso.tenant_rules("devs:shop:editor, urn:corp:ops:acme:viewer")
    assert [(r.value, r.tenant, r.role) for r in rules] == [("devs", "shop", "editor"),
                                                            ("urn:corp:ops", "acme", "viewer")]
    for bad in ("devs:shop:admin", "devs:shop", "devs:sh op:owner", ":shop:owner"):
        with pytest.raises(ValueError):
            sso.tenant_rules(bad)


def test_a_bad_mapping_fails_the_system_check(settings):
    settings.SWITCHYARD_OIDC_TENANT_ROLES = "devs:shop:superuser"
    assert [e.id for e in sso.check_settings()] == ["switchyard.E_SSO1"]


def test_a_new_identity_gets_an_account_and_the_mapping_grants_and_later_removes(mapped):
    sl = login(groups=["admins", "devs", "leads", "a:b:c"])
    user = sso.resolve(sl)
    assert user.username == "pat" and user.email == "pat@example.com" and not user.has_usable_password()
    sso.apply_mapping(user, sso.identity_from(sl))
    user.refresh_from_db()
    assert user.is_staff and roles(user) == {"shop": "owner", "acme": "owner"}  # the highest role wins
    Membership.objects.create(user=user, tenant=mapped["blog"], role="viewer")  # an unmapped tenant

    sl = login(groups=["ops"])
    assert sso.resolve(sl).pk == user.pk  # linked by sub from now on
    sso.apply_mapping(user, sso.identity_from(sl))
    user.refresh_from_db()
    assert not user.is_staff and roles(user) == {"acme": "viewer", "blog": "viewer"}


def test_a_verified_address_links_the_existing_account_an_unverified_one_does_not(mapped):
    pat = User.objects.create_user("pat-local", "pat@example.com", PASSWORD)
    assert sso.resolve(login(uid="u1")).pk == pat.pk
    other = sso.resolve(login(uid="u2", email="lee@example.com", verified=False, username="pat-local"))
    assert other.pk != pat.pk and other.username == "pat-local-2" and other.email == ""


@pytest.mark.parametrize("kind", ["inactive", "superuser", "break_glass", "duplicate", "linked"])
def test_an_address_of_an_account_that_must_not_be_linked_is_refused(kind, settings):
    settings.SWITCHYARD_BREAK_GLASS_USER = "Rescue"
    user = User.objects.create_user("rescue" if kind == "break_glass" else "pat", "pat@example.com", PASSWORD)
    if kind == "inactive":
        user.is_active = False
    if kind == "superuser":
        user.is_superuser = user.is_staff = True
    user.save()
    if kind == "duplicate":
        User.objects.create_user("pat2", "PAT@example.com", PASSWORD)
    if kind == "linked":
        SocialAccount.objects.create(user=user, provider=sso.PROVIDER_ID, uid="someone-else")
    with pytest.raises(sso.Refused):
        sso.resolve(login(uid="new"))
    assert not SocialAccount.objects.filter(uid="new").exists()
    assert User.objects.count() == (2 if kind == "duplicate" else 1)


def test_a_deactivated_linked_account_is_refused():
    user = sso.resolve(login())
    user.is_active = False
    user.save()
    with pytest.raises(sso.Refused, match="deactivated"):
        sso.resolve(login())


def test_an_invitation_needs_the_verified_invited_address(mapped):
    inv, _, _ = services.invite(Actor.system(), mapped["blog"], "pat@example.com", "editor", "http://x/")
    sso.check_invitation(inv, sso.identity_from(login(email="PAT@example.com")))
    with pytest.raises(sso.Refused, match="This invitation is for pat@example.com"):
        sso.check_invitation(inv, sso.identity_from(login(email="lee@example.com")))
    with pytest.raises(sso.Refused):
        sso.check_invitation(inv, sso.identity_from(login(verified=False)))


def test_local_passwords_off_leaves_only_the_break_glass_account(settings):
    settings.SWITCHYARD_OIDC_ISSUER = "http://127.0.0.1:9/o"
    settings.SWITCHYARD_OIDC_NAME = "Corp"
    settings.SWITCHYARD_LOCAL_PASSWORDS = False
    settings.SWITCHYARD_BREAK_GLASS_USER = "rescue"
    User.objects.create_user("alice", "alice@example.com", PASSWORD)
    User.objects.create_superuser("rescue", "rescue@example.com", PASSWORD)
    c = Client()
    page = c.get("/login/").content.decode()
    assert "Sign in with Corp" in page and "Password sign-in is off" in page
    r = c.post("/login/", {"username": "alice", "password": PASSWORD})
    assert r.status_code == 200 and "Password sign-in is off" in r.content.decode()
    r = c.post("/login/", {"username": "nobody", "password": "x"})
    assert "Password sign-in is off" in r.content.decode()  # the same words for every name
    assert c.post("/login/", {"username": "rescue", "password": PASSWORD}).status_code == 302
    users_page = c.get("/users/").content.decode()
    assert 'id="user-form"' in users_page and 'name="password"' not in users_page  # nothing to set
    with pytest.raises(ValidationError):
        services.send_password_reset(Actor.system(), User.objects.get(username="alice"), "http://x/")
    link = services.password_reset_link(User.objects.get(username="alice"), "http://testserver/")
    r = Client().get(link.replace("http://testserver", ""), follow=True)
    assert r.status_code == 200 and r.context["validlink"] is False  # a link sent before passwords were off
    rescue = services.password_reset_link(User.objects.get(username="rescue"), "http://testserver/")
    assert Client().get(rescue.replace("http://testserver", ""), follow=True).context["validlink"] is True
    with pytest.raises(ValidationError, match="local passwords are off"):
        services.create_user(Actor.system(), "bob", password="a long enough password")
    assert services.create_user(Actor.system(), "bob").has_usable_password() is False


def test_the_login_page_has_no_sso_button_without_an_issuer(settings):
    settings.SWITCHYARD_OIDC_ISSUER = ""
    page = Client().get("/login/").content.decode()
    assert "Sign in with" not in page and "sso-button" not in page


def test_with_passwords_on_the_login_page_offers_both(settings):
    settings.SWITCHYARD_OIDC_ISSUER = "http://127.0.0.1:9/o"
    settings.SWITCHYARD_OIDC_NAME = "Corp"
    page = Client().get("/login/").content.decode()
    assert "Sign in with Corp" in page and "or with your username and password" in page
    assert "Break-glass" not in page


def test_a_backup_keeps_which_identity_signs_in_as_which_user():
    from controlplane.configio import backup
    sso.resolve(login())
    data = backup.backup()
    assert data["sso_links"] == [{"user": "pat", "provider": sso.PROVIDER_ID, "uid": "sub-1"}]
    SocialAccount.objects.all().delete()
    backup.restore(data)
    assert SocialAccount.objects.get(provider=sso.PROVIDER_ID, uid="sub-1").user.username == "pat"


@pytest.mark.parametrize("extra, expected", [
    ({"SWITCHYARD_OIDC_ISSUER": "http://127.0.0.1:9/o", "SWITCHYARD_OIDC_CLIENT_ID": "x",
      "SWITCHYARD_OIDC_TENANT_ROLES": "devs:shop:admin"}, "the role must be one of"),
    ({"SWITCHYARD_LOCAL_PASSWORDS": "off"}, "SWITCHYARD_LOCAL_PASSWORDS=off needs single sign-on"),
])
def test_manage_py_check_refuses_a_bad_sso_configuration(extra, expected, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(SWITCHYARD_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="controlplane.settings", **extra)
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0 and expected in done.stdout + done.stderr


def test_the_users_api_says_who_is_linked(world, staff_api):
    linked = sso.resolve(login())
    rows = {u["username"]: u for u in staff_api.get("/api/v1/users/?limit=200").json()["results"]}
    assert rows[linked.username]["sso_linked"] is True and rows["operator"]["sso_linked"] is False
    assert staff_api.get(f"/api/v1/users/{linked.pk}/").json()["sso_linked"] is True


def test_a_provider_that_cannot_be_reached_is_a_clear_502(settings):
    from tests.support import free_port
    issuer = f"http://127.0.0.1:{free_port()}/o"  # nothing listens there
    settings.SWITCHYARD_OIDC_ISSUER = issuer
    settings.SWITCHYARD_OIDC_NAME = "Corp"
    settings.SOCIALACCOUNT_PROVIDERS = {"openid_connect": {"OAUTH_PKCE_ENABLED": True, "APPS": [{
        "provider_id": sso.PROVIDER_ID, "name": "Corp", "client_id": "c", "secret": "s",
        "settings": {"server_url": issuer}}]}}
    c = Client(enforce_csrf_checks=False)
    r = c.post("/login/sso/", {"next": "/routes/"})
    assert r.status_code == 502 and "Corp cannot be reached right now" in r.content.decode()
    assert c.get("/login/sso/").status_code == 405  # starting a sign-in takes a POST (with the CSRF token)
