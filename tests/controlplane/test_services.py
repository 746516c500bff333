"""The service layer: one transaction per action, with an audit entry."""
import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from controlplane.audit.models import AuditEntry
from controlplane.proxy import services
from controlplane.proxy.models import Pool, Target
from controlplane.publishing import publisher

from .helpers import ACTOR, pool, route, tenant

pytestmark = pytest.mark.django_db


def test_it_labels_actors():
    user = get_user_model().objects.create_user("alice")
    assert services.Actor(user=user).label == "alice"
    assert services.Actor(user=user, token_prefix="sy_abc").label == "token:sy_abc"
    assert services.Actor.system().label == "system"


def test_it_audits_a_create_with_the_version_it_produced():
    alice = services.Actor(user=get_user_model().objects.create_user("alice"), source_address="192.0.2.7")
    p = services.create_pool(alice, name="web", targets=[{"host": "127.0.0.1", "port": 80}], note="new")
    r = services.create_route(alice, name="api", hosts=["api.localhost"], pool=p.pk, note="go live")
    entry = AuditEntry.objects.filter(object_type="route").get()
    assert (entry.actor, entry.action, entry.object_id, entry.note) == ("alice", "create", str(r.pk), "go live")
    assert entry.source_address == "192.0.2.7" and entry.before is None
    assert entry.after["hosts"] == ["api.localhost"]
    assert entry.config_version == publisher.current_version().number


def test_it_audits_an_update_with_before_and_after():
    r = route("api")
    services.update_route(ACTOR, r, path="/v2", note="move")
    entry = AuditEntry.objects.filter(object_type="route", action="update").get()
    assert (entry.before["path"], entry.after["path"], entry.note) == ("/", "/v2", "move")


def test_it_audits_pool_targets_and_deletes():
    p = pool("web")
    services.update_pool(ACTOR, p, targets=[{"host": "127.0.0.2", "port": 81}])
    update = AuditEntry.objects.filter(object_type="pool", action="update").get()
    assert [t["host"] for t in update.before["targets"]] == ["127.0.0.1"]
    assert [t["host"] for t in update.after["targets"]] == ["127.0.0.2"]
    pool_id = p.pk
    services.delete_pool(ACTOR, p, note="gone")
    delete = AuditEntry.objects.filter(action="delete").get()
    assert (delete.object_id, delete.after, delete.note) == (str(pool_id), None, "gone")


def test_it_records_the_tenant_on_tenant_objects():
    shop = tenant("shop")
    route("api", shop)
    assert set(AuditEntry.objects.filter(object_type__in=["route", "pool"]).values_list("tenant__slug", flat=True)) \
        == {"shop"}


def test_it_never_audits_secrets():
    from .helpers import certificate
    cert = certificate("c")
    entry = AuditEntry.objects.filter(object_type="certificate").get()
    assert "private_key_encrypted" not in entry.after and "PRIVATE KEY" not in str(entry.after)
    assert cert.pk


def test_it_keeps_target_rows_whose_address_stays():
    p = pool("web", targets=[{"host": "127.0.0.1", "port": 80}, {"host": "127.0.0.1", "port": 81}],
             health_check_enabled=True)
    kept = p.targets.get(port=80)
    Target.objects.filter(pk=kept.pk).update(healthy=False)
    services.update_pool(ACTOR, p, targets=[{"host": "127.0.0.1", "port": 80, "weight": 5},
                                            {"host": "127.0.0.1", "port": 82}])
    row = p.targets.get(port=80)
    assert (row.pk, row.weight, row.healthy) == (kept.pk, 5, False)
    assert sorted(p.targets.values_list("port", flat=True)) == [80, 82]


def test_it_keeps_targets_when_none_are_given():
    p = pool("web")
    services.update_pool(ACTOR, p, retries=3)
    assert p.targets.count() == 1 and Pool.objects.get().retries == 3


def test_it_refuses_unknown_fields():
    with pytest.raises(TypeError):
        services.create_pool(ACTOR, name="p", colour="red")


def test_it_accepts_a_tenant_slug():
    tenant("shop")
    assert services.create_pool(ACTOR, tenant="shop", name="p",
                                targets=[{"host": "93.184.216.34", "port": 80}]).tenant.slug == "shop"


def test_it_refuses_deleting_a_tenant_that_owns_objects():
    shop = tenant("shop")
    pool("p", shop)
    with pytest.raises(ValidationError) as exc:
        services.delete_tenant(ACTOR, shop)
    assert exc.value.message_dict == {"__all__": ["tenant shop still owns pools; delete them first"]}


def test_it_audits_delegations():
    shop = tenant("shop")
    d = shop.delegations.get()
    services.update_delegation(ACTOR, d, "Shop.Example.NET.")
    d.refresh_from_db()
    assert d.suffix == "shop.example.net"
    actions = list(AuditEntry.objects.filter(object_type="delegation").values_list("action", flat=True))
    assert sorted(actions) == ["create", "update"]
