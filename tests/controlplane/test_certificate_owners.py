"""A certificate serves only its own owner's routes, also when its owner is
changed where that is possible (the Django admin, the services)."""
import pytest
from django.core.exceptions import ValidationError

from controlplane.proxy import services
from controlplane.proxy.models import Certificate

from .helpers import ACTOR, certificate, route, tenant

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def encryption_key(settings):
    settings.SWITCHYARD_ENCRYPTION_KEY = "test-encryption-key"


def test_it_keeps_the_owner_of_a_certificate_a_route_uses():
    shop = tenant("shop", "shop.example.com", "shop.example.net")
    cert = certificate("c", shop, names=("shop.example.net",))
    route("api", shop, hosts=["shop.example.net"], certificate=cert)
    with pytest.raises(ValidationError) as exc:
        services.update_certificate(ACTOR, Certificate.objects.get(pk=cert.pk), tenant=None)
    assert exc.value.message_dict == {"tenant": [
        "route api of tenant shop uses this certificate; a route may only use a certificate of its own owner"]}
    assert Certificate.objects.get(pk=cert.pk).tenant_id == shop.pk
