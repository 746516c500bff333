import pytest

from tests.alerts.servers import (  # noqa: F401 - fixtures
    eager_celery,
    retry_queue,
    second_webhook_server,
    smtp_server,
    webhook_server,
)


@pytest.fixture
def make_tenant(db):
    from controlplane.tenancy.models import Tenant

    def make(slug, allowed_networks=()):
        return Tenant.objects.create(slug=slug, name=slug.title(), allowed_networks=list(allowed_networks))
    return make


@pytest.fixture
def make_channel(db):
    from controlplane.alerts.models import AlertChannel

    def make(name, *, tenant=None, emails=None, url="", secret="", enabled=True):
        channel = AlertChannel(name=name, tenant=tenant, enabled=enabled,
                               kind=AlertChannel.EMAIL if emails else AlertChannel.WEBHOOK,
                               emails=list(emails or []), url=url)
        if secret:
            channel.secret = secret
        channel.save()
        return channel
    return make
