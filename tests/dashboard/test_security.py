"""The dashboard follows Django's own protections — return links stay on
this site, every page carries a Content-Security-Policy, sign-ins are throttled on
the normalised username (the admin's too), the live socket checks the Origin, and a
probe runs on a POST with CSRF only."""
from __future__ import annotations

import re
from io import StringIO

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from controlplane.asgi import application

from .conftest import PASSWORD

FOREIGN_URLS = ["javascript:alert(document.cookie)", "//evil.example/", "https://evil.example/routes/",
                "JavaScript:alert(1)", " javascript:alert(1)"]


def cancel_href(html: str) -> str:
    return re.search(r'<a class="btn" href="([^"]*)">Cancel</a>', html).group(1)


def test_it_never_puts_a_foreign_back_url_into_the_cancel_link(world, login):
    c = login(world["users"]["shop-editor"])
    route = world["objs"]["shop"]["route"]
    for back in FOREIGN_URLS:
        html = c.get(reverse("dashboard:route_delete", args=[route.pk]), {"back": back}).content.decode()
        assert cancel_href(html) == reverse("dashboard:routes"), back


def test_it_keeps_a_back_url_on_this_site(world, login):
    c = login(world["users"]["shop-editor"])
    route = world["objs"]["shop"]["route"]
    back = reverse("dashboard:route", args=[route.pk])
    html = c.get(reverse("dashboard:route_delete", args=[route.pk]), {"back": back}).content.decode()
    assert cancel_href(html) == back


# ------------------------------------------------------------------ Content-Security-Policy

def test_it_sends_a_content_security_policy_without_inline_code(world, login):
    c = login(world["users"]["staff"])
    for path in ["/", "/routes/", "/login/", "/admin/", "/admin/login/"]:
        header = c.get(path)["Content-Security-Policy"]
        policy = dict(part.strip().split(" ", 1) for part in header.split(";"))
        assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'", path
        assert policy["style-src"] == "'self'" and policy["object-src"] == "'none'", path
        assert policy["frame-ancestors"] == "'none'" and "unsafe" not in header, path


def test_pages_carry_no_inline_scripts_styles_or_handlers(world, login):
    c = login(world["users"]["staff"])
    pool = world["objs"]["shop"]["pool"]
    for path in ["/", reverse("dashboard:pool", args=[pool.pk]), reverse("dashboard:tenant", args=["shop"]),
                 reverse("dashboard:changes"), reverse("dashboard:diagnostics")]:
        html = c.get(path).content.decode()
        assert not re.search(r"\sstyle=|<style|\son[a-z]+=|javascript:", html, re.I), path
        for tag in re.findall(r"<script[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, (path, tag)


# ------------------------------------------------------------------ login throttle

def fail(client, url, username, times=5):
    for _ in range(times):
        assert client.post(url, {"username": username, "password": "wrong"}).status_code == 200


def test_it_throttles_the_fullwidth_spelling_of_a_throttled_username(world, client):
    fail(client, reverse("dashboard:login"), "shop-editor")
    response = client.post(reverse("dashboard:login"), {"username": "ｓhop-editor", "password": PASSWORD})
    assert response.status_code == 429 and b"Too many failed sign-in attempts" in response.content
    assert "_auth_user_id" not in client.session


def test_it_counts_fullwidth_and_upper_case_failures_against_the_username(world, client):
    fail(client, reverse("dashboard:login"), "ｓhop-editor", times=3)
    fail(client, reverse("dashboard:login"), "SHOP-EDITOR", times=2)
    response = client.post(reverse("dashboard:login"), {"username": "shop-editor", "password": PASSWORD})
    assert response.status_code == 429 and "_auth_user_id" not in client.session


def test_it_throttles_the_admin_login(world, client):
    fail(client, "/admin/login/", "staff")
    response = client.post("/admin/login/", {"username": "staff", "password": PASSWORD})
    assert response.status_code == 429 and b"Too many failed sign-in attempts" in response.content
    assert "_auth_user_id" not in client.session


def test_failures_on_either_login_count_for_both(world, client):
    fail(client, reverse("dashboard:login"), "staff", times=3)
    fail(client, "/admin/login/", "staff", times=2)
    for url in ("/admin/login/", reverse("dashboard:login")):
        assert client.post(url, {"username": "staff", "password": PASSWORD}).status_code == 429


def test_a_throttled_username_still_signs_in_from_another_address(world, client):
    fail(client, reverse("dashboard:login"), "staff")
    other = Client(REMOTE_ADDR="192.0.2.7")
    response = other.post(reverse("dashboard:login"), {"username": "staff", "password": PASSWORD})
    assert response.status_code == 302 and "_auth_user_id" in other.session


def test_resetlogins_lifts_the_throttle_for_a_username(world, client):
    fail(client, reverse("dashboard:login"), "shop-editor")
    out = StringIO()
    call_command("resetlogins", "ＳＨＯＰ-editor", stdout=out)
    assert "Forgot 5 failed sign-ins" in out.getvalue()
    response = client.post(reverse("dashboard:login"), {"username": "shop-editor", "password": PASSWORD})
    assert response.status_code == 302


# ------------------------------------------------------------------ diagnostics act on POST only

def test_a_probe_link_with_run_only_fills_the_form(world, login):
    c = login(world["users"]["staff"])
    html = c.get(reverse("dashboard:diagnostics_probe"), {"url": "http://127.0.0.1:9/", "run": "1"}).content.decode()
    assert 'value="http://127.0.0.1:9/"' in html  # the form is filled in ...
    assert "no data-plane node is connected" not in html and 'id="probe-result"' not in html  # ... nothing ran


# ------------------------------------------------------------------ /ws/live/ Origin

def session_cookie(user) -> bytes:
    c = Client()
    c.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={c.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


async def live_socket(cookie: bytes, origin: bytes | None):
    headers = [(b"cookie", cookie)] + ([(b"origin", origin)] if origin else [])
    comm = WebsocketCommunicator(application, "/ws/live/", headers=headers)
    connected, _ = await comm.connect(timeout=5)
    await comm.disconnect()
    return connected


@pytest.mark.django_db(transaction=True)
async def test_the_live_socket_refuses_a_foreign_or_missing_origin(world):
    cookie = await sync_to_async(session_cookie)(world["users"]["staff"])
    for origin in (b"http://evil.example", b"null", b"http://testserver.evil.example", None):
        assert not await live_socket(cookie, origin), origin


@pytest.mark.django_db(transaction=True)
async def test_the_live_socket_accepts_pages_of_this_site(world):
    cookie = await sync_to_async(session_cookie)(world["users"]["staff"])
    for origin in (b"http://testserver", b"http://127.0.0.1:8000", b"https://localhost"):
        assert await live_socket(cookie, origin), origin

