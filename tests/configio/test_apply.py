"""Export and apply: round trips, idempotence, one version, dry runs, prune, scope, problems."""
from __future__ import annotations

import pytest

from controlplane.alerts.models import AlertChannel
from controlplane.audit.models import AuditEntry
from controlplane.proxy import services
from controlplane.proxy.models import Pool, Route
from controlplane.publishing.models import ConfigVersion
from controlplane.tenancy.access import Principal
from controlplane.tenancy.models import Tenant
from tests.controlplane.helpers import ACTOR, PUBLIC_IP

from .conftest import PASSPHRASE
from .helpers import apply, as_data, as_text, empty_installation, exported, item, state

pytestmark = pytest.mark.django_db


# ------------------------------------------------------------------ export

def test_the_same_configuration_exports_the_same_bytes(world):
    assert exported() == exported()
    assert exported(fmt="json") == exported(fmt="json")


def test_export_names_objects_and_never_holds_a_secret_or_a_plain_key(world):
    text = exported()
    data = as_data(text)
    assert item(data, "routes", "api", "alpha")["pool"] == "web"
    assert item(data, "routes", "api", "alpha")["certificate"] == "wildcard"
    assert "id" not in item(data, "pools", "web", "alpha")
    assert "s3cret" not in text and "secret" not in item(data, "alert_channels", "oncall", "alpha")
    assert "PRIVATE KEY" not in text
    with_keys = exported(passphrase=PASSPHRASE)
    assert "BEGIN ENCRYPTED PRIVATE KEY" in with_keys and "BEGIN PRIVATE KEY" not in with_keys


def test_a_tenants_export_holds_only_its_own_objects(world):
    data = as_data(exported(world["alpha"]["tenant"]))
    assert data["tenant"] == "alpha"
    assert [t["slug"] for t in data["tenants"]] == ["alpha"]
    for section in ("certificates", "pools", "routes", "alert_channels"):
        assert data[section] and {i["tenant"] for i in data[section]} == {"alpha"}


# ------------------------------------------------------------------ round trip and idempotence

@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_export_then_apply_to_an_empty_installation_exports_the_same_bytes(world, fmt):
    before, with_keys = exported(fmt=fmt), exported(fmt=fmt, passphrase=PASSPHRASE)
    empty_installation()
    result = apply(with_keys, note="restore from git")
    assert result.ok, result.problems
    assert exported(fmt=fmt) == before
    assert ConfigVersion.objects.count() == 1
    assert ConfigVersion.objects.get().note == "restore from git"


def test_applying_the_same_file_twice_creates_no_second_version(world):
    data = as_data(exported())
    item(data, "routes", "www", "beta")["priority"] = 7
    item(data, "pools", "web", "alpha")["connect_timeout"] = 2.5
    text = as_text(data)
    first = apply(text, note="tune")
    assert first.ok and first.version is not None
    count = ConfigVersion.objects.count()
    again = apply(text, note="tune")
    assert again.ok and again.changes == [] and again.version is None
    assert ConfigVersion.objects.count() == count


def test_many_changes_make_one_version_with_the_note_and_its_audit_entries(world):
    latest = ConfigVersion.objects.order_by("-number").first().number
    data = as_data(exported())
    item(data, "routes", "www", "alpha")["path"] = "/shop"
    item(data, "routes", "www", "beta")["enabled"] = False
    data["pools"].append({"tenant": "alpha", "name": "new", "targets": [{"host": PUBLIC_IP, "port": 9000}]})
    result = apply(as_text(data), note="release 42")
    assert result.ok, result.problems
    assert [v.number for v in ConfigVersion.objects.filter(number__gt=latest)] == [latest + 1]
    assert result.version == latest + 1 and ConfigVersion.objects.get(number=latest + 1).note == "release 42"
    entries = AuditEntry.objects.filter(config_version=latest + 1)
    assert {(e.object_type, e.action) for e in entries} >= {("route", "update"), ("pool", "create"),
                                                            ("", "apply")}
    assert all(e.note == "release 42" for e in entries)


def test_the_diff_lists_changes_field_by_field(world):
    data = as_data(exported())
    item(data, "pools", "web", "alpha")["health_check"]["interval"] = 9.0
    result = apply(as_text(data), dry_run=True)
    [change] = result.changes
    assert (change.action, change.label, change.path) == ("update", "pool alpha/web", "pools[1]")
    assert change.fields == [{"field": "health_check.interval", "before": 5.0, "after": 9.0}]


# ------------------------------------------------------------------ dry run

def test_a_dry_run_lists_the_changes_and_changes_nothing(world):
    before = state()
    data = as_data(exported())
    item(data, "routes", "api", "alpha")["hosts"] = ["api.alpha.example.com", "v2.alpha.example.com"]
    data["routes"] = [r for r in data["routes"] if r["name"] != "www"]
    data["pools"].append({"tenant": "beta", "name": "extra", "targets": [{"host": PUBLIC_IP, "port": 1}]})
    result = apply(as_text(data), dry_run=True, prune=True)
    assert result.ok, result.problems
    assert sorted(str(c) for c in result.changes) == ["+ pool beta/extra", "- route alpha/www", "- route beta/www",
                                                      "~ route alpha/api"]
    assert state() == before


def test_a_dry_run_finds_what_the_services_refuse(world):
    data = as_data(exported())
    item(data, "routes", "www", "alpha")["hosts"] = ["api.alpha.example.com"]   # overlaps route api
    item(data, "routes", "www", "alpha")["path"] = "/v1"
    before = state()
    result = apply(as_text(data), dry_run=True)
    assert [p.object for p in result.problems] == ["route alpha/www"]
    assert "already matched the same way by route api" in result.problems[0].message
    assert state() == before


# ------------------------------------------------------------------ prune and scope

def test_prune_deletes_only_what_the_file_does_not_name_and_only_in_its_scope(world):
    alpha = world["alpha"]["tenant"]
    data = as_data(exported(alpha))
    data["routes"] = [r for r in data["routes"] if r["name"] != "www"]
    data["alert_channels"] = []
    result = apply(as_text(data), prune=True)
    assert result.ok, result.problems
    assert sorted(str(c) for c in result.changes) == ["- alert channel alpha/oncall", "- route alpha/www"]
    assert not Route.objects.filter(tenant=alpha, name="www").exists()
    assert Route.objects.filter(tenant__slug="beta", name="www").exists()
    assert Route.objects.filter(tenant__isnull=True, name="status").exists()
    assert AlertChannel.objects.filter(tenant__slug="beta").exists()
    assert AlertChannel.objects.filter(tenant__isnull=True).exists()


def test_prune_leaves_the_sections_a_file_does_not_have(world):
    data = as_data(exported())
    only_routes = {"switchyard": 1, "routes": data["routes"]}
    result = apply(as_text(only_routes), prune=True, dry_run=True)
    assert result.ok and result.changes == []


def test_prune_without_the_flag_deletes_nothing(world):
    data = as_data(exported())
    data["routes"] = []
    result = apply(as_text(data), dry_run=True)
    assert result.ok and result.changes == []


def test_a_tenant_file_naming_another_tenants_host_is_refused_with_the_object_named(world):
    data = as_data(exported(world["alpha"]["tenant"]))
    item(data, "routes", "www", "alpha")["hosts"] = ["shop.beta.example.com"]
    before = state()
    result = apply(as_text(data))
    assert [(p.path, p.object) for p in result.problems] == [("routes[1].hosts", "route alpha/www")]
    assert "shop.beta.example.com is outside tenant alpha's delegations" in result.problems[0].message
    assert state() == before


def test_a_tenant_file_naming_another_tenants_pool_is_refused_with_the_object_named(world):
    services.create_pool(ACTOR, tenant=world["beta"]["tenant"], name="beta-only",
                         targets=[{"host": PUBLIC_IP, "port": 80}])
    data = as_data(exported(world["alpha"]["tenant"]))
    item(data, "routes", "www", "alpha")["pool"] = "beta-only"
    data["pools"].append({**item(data, "pools", "web", "alpha"), "tenant": "beta", "name": "sneaky"})
    before = state()
    result = apply(as_text(data))
    messages = {(p.object, p.message) for p in result.problems}
    assert messages == {
        ("route alpha/www", "tenant alpha has no pool named beta-only"),
        ("pool beta/sneaky", "belongs to tenant beta, outside this file's scope (tenant alpha)"),
    }
    assert state() == before


def test_a_file_of_one_tenant_cannot_be_applied_as_another(world):
    data = as_data(exported(world["alpha"]["tenant"]))
    result = apply(as_text(data), tenant="beta")
    assert [p.message for p in result.problems] == ["the file is tenant alpha's, not tenant beta's"]


def test_roles_decide_what_a_member_may_apply(world, django_user_model):
    alpha = world["alpha"]["tenant"]
    editor = Principal(user=None, roles={alpha.pk: "editor"})
    viewer = Principal(user=None, roles={alpha.pk: "viewer"})
    data = as_data(exported(alpha))
    item(data, "pools", "web", "alpha")["retries"] = 3
    assert apply(as_text(data), principal=editor, dry_run=True).ok
    refused = apply(as_text(data), principal=viewer, dry_run=True)
    assert [p.message for p in refused.problems] == ["needs the editor or owner role in tenant alpha"]
    data["tenants"][0]["quotas"]["routes"] = 1000
    refused = apply(as_text(data), principal=editor)
    assert [(p.object, p.message) for p in refused.problems] == [
        ("tenant alpha", "only platform staff may change tenants and delegations")]
    assert Pool.objects.get(tenant=alpha, name="web").retries == 1


# ------------------------------------------------------------------ every problem, listed

def test_a_file_with_ten_errors_lists_ten_errors(world):
    data = as_data(exported())
    routes = {r["name"] + "@" + str(r["tenant"]): r for r in data["routes"]}
    routes["www@alpha"]["hosts"] = ["www.beta.example.com"]           # 1 outside the delegations
    routes["api@alpha"]["pool"] = "missing"                           # 2 unknown pool
    routes["api@beta"]["certificate"] = "missing"                     # 3 unknown certificate
    routes["www@beta"]["path"] = "no-slash"                           # 4 not a path
    routes["status@None"]["priority"] = "high"                        # 5 wrong type
    item(data, "pools", "web", "alpha")["connect_timeout"] = 0        # 6 not a timeout
    item(data, "pools", "web", "beta")["targets"] = [{"host": "127.0.0.1", "port": 80}]  # 7 loopback target
    item(data, "alert_channels", "oncall", "alpha")["url"] = "ftp://x"  # 8 not an http(s) URL
    data["tenants"][0]["colour"] = "blue"                             # 9 unknown field
    data["pools"].append({"tenant": "beta", "targets": []})          # 10 no name
    before = state()
    result = apply(as_text(data))
    assert len(result.problems) == 10, "\n".join(map(str, result.problems))
    assert all(p.path for p in result.problems)
    assert {p.object for p in result.problems} >= {"route alpha/api", "route alpha/www", "route beta/api",
                                                   "route beta/www", "route status", "pool alpha/web",
                                                   "pool beta/web", "alert channel alpha/oncall", "tenant alpha"}
    assert state() == before


def test_a_file_that_is_not_yaml_is_one_problem(world):
    result = apply("routes: [unclosed")
    assert len(result.problems) == 1 and "not valid YAML or JSON" in result.problems[0].message


# ------------------------------------------------------------------ keys and secrets

def test_a_certificate_needs_its_key_and_the_right_passphrase(world):
    with_keys = as_data(exported(passphrase=PASSPHRASE))
    empty_installation()
    wrong = apply(as_text(with_keys), passphrase=b"not the passphrase")
    assert {(p.object, p.path) for p in wrong.problems} == {
        ("certificate alpha/wildcard", "certificates[0].private_key_pem"),
        ("certificate beta/wildcard", "certificates[1].private_key_pem"),
        ("alert channel alpha/oncall", "alert_channels[1].secret"),
        ("alert channel beta/oncall", "alert_channels[2].secret")}
    assert Tenant.objects.count() == 0
    for cert in with_keys["certificates"]:
        del cert["private_key_pem"]
    missing = apply(as_text(with_keys))
    assert {p.path for p in missing.problems} == {"certificates[0].private_key_pem",
                                                  "certificates[1].private_key_pem"}


def test_a_webhook_secret_in_the_file_is_set_and_compared_without_being_shown(world):
    data = as_data(exported())
    item(data, "alert_channels", "oncall", "alpha")["secret"] = "rotated"
    result = apply(as_text(data))
    assert [c.fields for c in result.changes] == [[{"field": "secret", "before": "(hidden)", "after": "(hidden)"}]]
    assert AlertChannel.objects.get(tenant__slug="alpha").secret == "rotated"
    assert apply(as_text(data)).changes == []
