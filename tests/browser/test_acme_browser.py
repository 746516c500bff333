"""Automatic certificates in a real browser against a real Daphne control plane with ACME
configured (the CA itself is not needed for what the pages say): the route form offers
the challenge and the profile and refuses a bad profile with a clear error; a failed
order's route page shows the CA's error and the next try; a route whose ACME was
switched off says its certificate stays attached and is not renewed.
Screenshots: acme-route-form, acme-route-failed, acme-route-off (each -1280 and -390)."""
from __future__ import annotations

import json
import re

import pytest

from tests.e2e.harness import ControlPlaneEnv, Stack

pytestmark = [pytest.mark.chromium, pytest.mark.e2e]
PASSWORD = "acme-browser-password"

SEED = """
import datetime as dt, json
import trustme
from django.contrib.auth import get_user_model
from django.utils import timezone
from controlplane.acme.models import Order
from controlplane.proxy import services
get_user_model().objects.create_superuser('acme-admin', 'a@example.com', '%s')
actor = services.Actor.system()
pool = services.create_pool(actor, name='acme-pool', targets=[{'host': '127.0.0.1', 'port': 9}])
failed = services.create_route(actor, name='shop', hosts=['shop.example.com'], pool=pool, acme=True,
                               acme_challenge='tls-alpn-01', acme_profile='shortlived')
Order.objects.filter(route=failed).update(
    state='failed', failures=1, next_retry=timezone.now() + dt.timedelta(hours=1),
    error='validation failed: shop.example.com: tls-alpn-01: urn:ietf:params:acme:error:connection: '
          '127.0.0.2:443: connection refused')
leaf = trustme.CA().issue_cert('legacy.example.com')
cert = services.create_certificate(actor, name='acme-legacy', source='acme',
                                   certificate_pem=''.join(b.bytes().decode() for b in leaf.cert_chain_pems),
                                   private_key_pem=leaf.private_key_pem.bytes().decode())
off = services.create_route(actor, name='legacy', hosts=['legacy.example.com'], pool=pool, certificate=cert)
print(json.dumps({'failed': failed.pk, 'off': off.pk}))
""" % PASSWORD


@pytest.fixture(scope="module")
def world(browser_requirements, tmp_path_factory):
    root = tmp_path_factory.mktemp("acme-browser")
    cp = ControlPlaneEnv("embedded", root).setup()
    cp.env.update(SWITCHYARD_ACME_DIRECTORY="https://ca.invalid/dir", SWITCHYARD_ACME_DNS_SERVER="127.0.0.1:53",
                  SWITCHYARD_ACME_DNS_ZONE="dyn.example.test")
    stack = Stack(cp, root / "stack")
    try:
        ids = json.loads(cp.manage("shell", "-c", SEED).stdout.strip().splitlines()[-1])
        stack.start_control_plane()
        yield {"url": f"http://127.0.0.1:{stack.cp_port}", **ids}
    finally:
        stack.close()
        cp.close()


def signed_in(browser, world, width: int):
    context = browser.new_context(viewport={"width": width, "height": 900}, base_url=world["url"])
    page = context.new_page()
    page.set_default_timeout(30000)
    page.goto("/login/")
    page.fill("#id_username", "acme-admin")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    return context, page


@pytest.mark.parametrize("width", [1280, 390])
def test_acme_pages_say_what_is_true(browser, world, screenshots, width):
    context, page = signed_in(browser, world, width)
    try:
        page.goto(f"/routes/{world['failed']}/")
        body = page.inner_text("main")
        assert "failed" in body and "connection refused" in body and "next try" in body
        assert "TLS-ALPN-01" in body and "profile shortlived" in body
        screenshots(page, f"acme-route-failed-{width}")

        page.goto(f"/routes/{world['off']}/")
        off = page.inner_text("#acme-off")
        assert "renewal off" in off and "stays attached but is not renewed" in off and "expires" in off
        screenshots(page, f"acme-route-off-{width}")

        page.goto(f"/routes/{world['failed']}/edit/")
        options = page.eval_on_selector_all("#id_acme_challenge option", "els => els.map(e => e.value)")
        assert options == ["", "http-01", "tls-alpn-01", "dns-01"]
        assert page.input_value("#id_acme_challenge") == "tls-alpn-01"
        page.fill("#id_acme_profile", "short lived!")
        page.click("#preview-button")
        assert "a profile name is letters, digits" in page.inner_text("main")
        screenshots(page, f"acme-route-form-{width}")
    finally:
        context.close()
