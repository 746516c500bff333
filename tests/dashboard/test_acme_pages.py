"""The dashboard shows an automatic certificate as it really is: the box only where ACME
is configured, and the order's state (never a claim) on the route page."""
import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from controlplane.acme.models import Order
from tests.controlplane import helpers as h


@pytest.fixture
def staff(db, login):
    from django.contrib.auth import get_user_model
    return login(get_user_model().objects.create_user("ops", is_staff=True))


def test_the_route_form_offers_acme_only_where_it_is_configured(staff, settings):
    settings.SWITCHYARD_ACME_DIRECTORY = ""
    assert 'name="acme"' not in staff.get(reverse("dashboard:route_new")).content.decode()
    settings.SWITCHYARD_ACME_DIRECTORY = "https://ca.invalid/dir"
    page = staff.get(reverse("dashboard:route_new")).content.decode()
    assert 'name="acme"' in page and "Automatic certificate (ACME)" in page


def test_the_route_page_shows_a_failed_order_with_the_cas_error_and_the_next_try(staff, settings):
    settings.SWITCHYARD_ACME_DIRECTORY = "https://ca.invalid/dir"
    route = h.route("shop", hosts=["shop.localhost"], acme=True)
    retry = timezone.now() + dt.timedelta(hours=1)
    Order.objects.update_or_create(route=route, defaults={
        "names": ["shop.localhost"], "state": Order.FAILED, "next_retry": retry,
        "error": "urn:ietf:params:acme:error:connection: 127.0.0.2: Connection refused"})
    page = staff.get(reverse("dashboard:route", args=[route.pk])).content.decode()
    assert "ACME (automatic)" not in page
    assert '<span class="badge bad">failed</span> urn:ietf:params:acme:error:connection' in page
    assert f"next try {retry:%Y-%m-%d %H:%M} UTC" in page


def test_the_route_page_shows_a_valid_order_with_its_renewal(staff, settings):
    settings.SWITCHYARD_ACME_DIRECTORY = "https://ca.invalid/dir"
    route = h.route("shop", hosts=["shop.localhost"], acme=True)
    renew = timezone.now() + dt.timedelta(days=40)
    cert = h.certificate("shop-acme", names=("shop.localhost",))
    Order.objects.update_or_create(route=route, defaults={
        "names": ["shop.localhost"], "state": Order.VALID, "certificate": cert, "renew_at": renew})
    page = staff.get(reverse("dashboard:route", args=[route.pk])).content.decode()
    assert f'<span class="badge ok">valid</span> · renews {renew:%Y-%m-%d %H:%M} UTC' in page
