"""Access lists and the maintenance switch in the business layer: validation, tenant
isolation, versions and audit, and what the nodes get in the snapshot."""
import pytest
from django.core.exceptions import ValidationError

from controlplane.audit.models import AuditEntry
from controlplane.proxy import services
from controlplane.proxy.models import AccessList, Route
from controlplane.publishing.models import ConfigVersion
from dataplane import applier, schema

from .helpers import ACTOR, pool, route, tenant

pytestmark = pytest.mark.django_db

RULES = [{"action": "deny", "cidr": " 10.0.0.5 "}, {"action": "Allow", "cidr": "10.0.0.0/8"},
         {"action": "allow", "cidr": "2001:DB8::1/32"}]


def refused(func, *args, **kwargs) -> dict:
    with pytest.raises(ValidationError) as exc:
        func(*args, **kwargs)
    return exc.value.message_dict


def acl(name="office", owner=None, rules=RULES, **fields) -> AccessList:
    return services.create_access_list(ACTOR, tenant=owner, name=name, rules=rules, **fields)


def test_it_stores_rules_in_order_with_canonical_networks():
    a = acl(default="deny")
    assert a.rules == [{"action": "deny", "cidr": "10.0.0.5/32"}, {"action": "allow", "cidr": "10.0.0.0/8"},
                       {"action": "allow", "cidr": "2001:db8::/32"}]
    assert AccessList.objects.get().default == "deny"


def test_it_refuses_bad_rules_naming_the_rule():
    errors = refused(acl, rules=[{"action": "allow", "cidr": "10.0.0.0/8"}, {"action": "allow", "cidr": "10.300.0.0/8"},
                                 {"action": "maybe", "cidr": "::1"}])
    assert errors == {"rules": ["rule 2: '10.300.0.0/8' is not an IPv4 or IPv6 address or network",
                                "rule 3: action must be allow or deny"]}
    assert not AccessList.objects.exists()


def test_it_refuses_a_name_the_proxy_status_header_cannot_carry_and_duplicates():
    assert "name" in refused(acl, name='bad "quoted" name')
    acl("office")
    assert refused(acl, "office") == {"name": ["the platform already has an access list named office"]}


def test_a_route_uses_its_owners_list_and_the_snapshot_carries_it():
    a = acl(default="deny")
    r = route("api", access_list=a.id, maintenance=True, retry_after=120)
    snap = ConfigVersion.objects.latest("number").snapshot
    [entry] = [x for x in snap["routes"] if x["id"] == r.id]
    assert entry["access_list"] == a.id and entry["maintenance"] is True and entry["retry_after"] == 120
    assert snap["access_lists"] == [{"id": a.id, "name": "office", "tenant": None, "default": "deny",
                                     "rules": a.rules}]
    applier.check_snapshot(snap)  # the node's own build accepts it
    parsed = schema.parse_snapshot(snap)
    assert parsed.access_lists[0].rules[0] == schema.AccessRule("deny", "10.0.0.5/32")


def test_tenant_isolation_refuses_another_owners_list():
    shop, other = tenant("shop"), tenant("other")
    theirs = acl("theirs", other)
    platform = acl("platform")
    shop_pool, platform_pool = pool("shop-pool", shop), pool("platform-pool")
    errors = refused(route, "api", shop, pool_obj=shop_pool, access_list=theirs.id)
    assert errors == {"access_list": [f"unknown access list {theirs.id}"]}  # nothing learned about it
    assert refused(route, "web", shop, pool_obj=shop_pool, access_list=platform.id) == {
        "access_list": [f"unknown access list {platform.id}"]}
    errors = refused(route, "plat", None, pool_obj=platform_pool, access_list=theirs.id)
    assert "may only use an access list of its own owner" in errors["access_list"][0]
    assert not Route.objects.exists()
    mine = acl("mine", shop)
    assert route("api", shop, pool_obj=shop_pool, access_list=mine.id).access_list_id == mine.id


def test_the_nodes_schema_refuses_another_owners_list_too():
    snap = {"pools": [{"id": 1, "name": "p", "tenant": "shop", "targets": [{"id": 1, "host": "a.example", "port": 80}]}],
            "routes": [{"id": 1, "name": "r", "tenant": "shop", "hosts": ["a.shop.example.com"], "pool": 1,
                        "access_list": 7}],
            "access_lists": [{"id": 7, "name": "x", "tenant": "other", "rules": []}]}
    with pytest.raises(schema.SnapshotInvalid) as exc:
        schema.parse_snapshot(snap)
    assert [e.path for e in exc.value.errors] == ["routes[0].access_list"]


def test_a_list_in_use_cannot_be_deleted_or_moved_and_every_change_is_audited():
    shop = tenant("shop")
    a = acl("office", shop)
    r = route("api", shop, access_list=a.id)
    assert "used by routes api" in refused(services.delete_access_list, ACTOR, a)["__all__"][0]
    assert "tenant" in refused(services.update_access_list, ACTOR, a, tenant=None)
    before = ConfigVersion.objects.latest("number").number
    services.update_access_list(ACTOR, a, rules=[{"action": "deny", "cidr": "0.0.0.0/0"}], note="lock down")
    latest = ConfigVersion.objects.latest("number")
    assert latest.number == before + 1
    assert latest.snapshot["access_lists"][0]["rules"] == [{"action": "deny", "cidr": "0.0.0.0/0"}]
    services.update_route(ACTOR, r, access_list=None)
    services.delete_access_list(ACTOR, AccessList.objects.get())
    actions = list(AuditEntry.objects.filter(object_type__icontains="access").values_list("action", flat=True)
                   .order_by("id"))
    assert actions == ["create", "update", "delete"]
    assert "access_lists" not in ConfigVersion.objects.latest("number").snapshot


def test_retry_after_is_bounded():
    errors = refused(route, "api", maintenance=True, retry_after=10**9)
    assert "retry_after" in errors


def test_a_nack_naming_an_access_list_quarantines_it_with_its_routes_only(settings):
    from controlplane.publishing.consumers import record_nack
    from controlplane.publishing.models import Node, Quarantine
    from controlplane.publishing import quarantined

    settings.SWITCHYARD_ENCRYPTION_KEY = "test-encryption-key"
    shop, acme = tenant("shop"), tenant("acme")
    a = acl("office", shop)
    guarded = route("api", shop, access_list=a.id)
    other = route("web", acme)
    node = Node.register("edge-1")[0]
    rejected = ConfigVersion.objects.latest("number")
    assert [x["name"] for x in rejected.snapshot["access_lists"]] == ["office"]
    record_nack(node.pk, "nonce", rejected.number, rejected.sha256,
                [{"path": "access_lists[0].rules[1].cidr", "message": "not understood by this node"}])
    q = Quarantine.objects.get()
    assert (q.kind, q.object_id, q.object_name) == (Quarantine.ACCESS_LIST, a.id, "office")
    latest = ConfigVersion.objects.latest("number")
    assert latest.number == rejected.number + 1
    assert [r["id"] for r in latest.snapshot["routes"]] == [other.id]  # the guarded route waits, never unguarded
    assert "access_lists" not in latest.snapshot
    assert quarantined.keeping_out(guarded, quarantined.in_force()) == q
    services.update_access_list(ACTOR, AccessList.objects.get(), rules=[{"action": "allow", "cidr": "10.0.0.0/8"}])
    assert guarded.id in [r["id"] for r in ConfigVersion.objects.latest("number").snapshot["routes"]]


def test_checkconfig_counts_and_checks_access_lists():
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    a = acl("office")
    route("api", access_list=a.id)
    out = StringIO()
    call_command("checkconfig", "--schema-only", stdout=out)
    assert "(1 routes, 1 pools, 0 certificates, 1 access lists)" in out.getvalue()
    AccessList.objects.filter(pk=a.pk).update(rules=[{"action": "allow", "cidr": "10.0.0.300/8"}])
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("checkconfig", "--schema-only", stdout=out)
    assert f"ERROR access list office (id {a.pk}): access_lists[0].rules[0].cidr:" in out.getvalue()


def test_why_4xx_names_the_routes_access_list_and_the_maintenance_switch():
    from controlplane.diagnostics.services.errors import explained_errors

    a = acl("office", default="deny")
    r = route("api", access_list=a.id)
    summary = {"errors_by_type": [{"type": "http_request_denied", "count": 3, "status": 403}]}
    [item] = explained_errors(summary, r)
    assert item["policy"] == {"access_list": "office", "rules": 3, "default": "deny"}
    assert "access list office" in item["check"] and "trusted_proxies" in item["check"]
    assert "access list" in item["meaning"]
    services.update_route(ACTOR, r, maintenance=True)
    summary = {"errors_by_type": [{"type": "destination_unavailable", "count": 2, "status": 503}]}
    [item] = explained_errors(summary, Route.objects.get(pk=r.pk))
    assert item["policy"]["maintenance"] is True and "maintenance mode" in item["check"]
