"""Backup and restore keep the ACME account (its key still encrypted) and each route's
order state, so a restored installation renews with the same account instead of
registering a new one, and the route pages keep saying how their certificates stand."""
from __future__ import annotations

import json

import pytest
from django.utils import timezone

from controlplane import crypto
from controlplane.acme.models import Account, Order
from controlplane.configio import backup
from controlplane.proxy import services
from controlplane.publishing.models import Quarantine
from controlplane.proxy.models import Target
from tests.controlplane.helpers import ACTOR, pool

from .helpers import empty_installation

pytestmark = pytest.mark.django_db


def test_backup_and_restore_keep_the_acme_account_and_orders(db):
    account = Account.objects.create(directory="https://ca.example.test/dir", uri="https://ca.example.test/acct/7",
                                     email="ops@example.test", key_encrypted=crypto.encrypt("account key"))
    route = services.create_route(ACTOR, name="site", hosts=["site.example.test"], pool=pool("web"))
    renew_at = timezone.now().replace(microsecond=0)
    Order.objects.create(route=route, names=["site.example.test"], state=Order.FAILED, error="CA said no",
                         failures=2, next_retry=renew_at)
    data = json.loads(json.dumps(backup.backup()))
    Quarantine.objects.all().delete()
    Target.objects.all().delete()
    empty_installation()
    assert not Account.objects.exists() and not Order.objects.exists()

    restored = backup.restore(data)

    assert restored.same_hash
    again = Account.objects.get()
    assert (again.pk, again.uri, again.email) == (account.pk, account.uri, account.email)
    assert crypto.decrypt(again.key_encrypted) == "account key"
    order = Order.objects.get()
    assert (order.route.name, order.state, order.error, order.failures, order.next_retry) == \
        ("site", Order.FAILED, "CA said no", 2, renew_at)


def test_restore_refuses_an_account_key_it_cannot_decrypt(db):
    Account.objects.create(directory="https://ca.example.test/dir", key_encrypted="not encrypted at all")
    data = json.loads(json.dumps(backup.backup()))
    empty_installation()
    with pytest.raises(backup.RestoreError, match="ACME account"):
        backup.restore(data)
    assert not Account.objects.exists()
