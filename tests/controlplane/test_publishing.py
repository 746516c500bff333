"""Compiler, publisher, config versions, rollback and diff."""
import os
import stat

import pytest
from django.core.exceptions import ValidationError

from controlplane.audit.models import AuditEntry
from controlplane import crypto
from controlplane.proxy import services
from controlplane.proxy.models import Pool, Route, Target
from controlplane.publishing import compiler, notify, publisher
from controlplane.publishing.models import ConfigVersion
from dataplane import schema

from .helpers import ACTOR, certificate, pool, route, tenant

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def encryption_key(settings):
    settings.SWITCHYARD_ENCRYPTION_KEY = "test-encryption-key"


def versions() -> list[int]:
    return list(ConfigVersion.objects.order_by("number").values_list("number", flat=True))


# ------------------------------------------------------------------ compiler

def test_it_compiles_a_snapshot_the_schema_accepts():
    shop = tenant("shop", allowed_networks=["10.0.0.0/8"])
    route("api", shop, request_headers={"set": [{"name": "X-Env", "value": "prod"}]})
    route("edge")
    snap = compiler.compile_snapshot()
    parsed = schema.parse_snapshot(snap)
    assert [r.name for r in parsed.routes] == ["api", "edge"]
    shop_pool = next(p for p in snap["pools"] if p["tenant"] == "shop")
    assert shop_pool["policy"] == {"restricted": True, "allowed_networks": ["10.0.0.0/8"]}
    platform_pool = next(p for p in snap["pools"] if p["tenant"] is None)
    assert platform_pool["policy"] == {"restricted": False, "allowed_networks": []}


def test_it_compiles_the_pools_passive_health_settings():
    route("api", pool_obj=pool("tuned", passive_failures=2, passive_ejection_seconds=7.5))
    route("plain")
    snap = compiler.compile_snapshot()
    by_name = {p["name"]: p for p in snap["pools"]}
    assert (by_name["tuned"]["passive_failures"], by_name["tuned"]["passive_ejection_seconds"]) == (2, 7.5)
    assert (by_name["plain-pool"]["passive_failures"],
            by_name["plain-pool"]["passive_ejection_seconds"]) == (5, 30.0)
    parsed = {p.name: p for p in schema.parse_snapshot(snap).pools}
    assert (parsed["tuned"].passive_failures, parsed["tuned"].passive_ejection_seconds) == (2, 7.5)


def test_it_refuses_passive_health_settings_out_of_range():
    with pytest.raises(ValidationError) as exc:
        pool("bad", passive_failures=1001)
    assert "passive_failures" in exc.value.message_dict
    with pytest.raises(ValidationError) as exc:
        pool("bad", passive_ejection_seconds=0.1)
    assert "passive_ejection_seconds" in exc.value.message_dict


def test_it_compiles_only_enabled_routes_and_the_pools_they_use():
    used = route("used")
    pool("unused")
    off = route("off")
    services.update_route(ACTOR, off, enabled=False)
    snap = compiler.compile_snapshot()
    assert [r["name"] for r in snap["routes"]] == ["used"]
    assert [p["id"] for p in snap["pools"]] == [used.pool_id]


def test_it_orders_everything_by_id_for_a_stable_hash():
    route("b")
    route("a")
    first = compiler.compile_snapshot()
    assert [r["name"] for r in first["routes"]] == ["b", "a"]
    assert schema.snapshot_hash(compiler.compile_snapshot()) == schema.snapshot_hash(first)


def test_it_compiles_certificates_without_private_keys():
    shop = tenant("shop")
    cert = certificate("c", shop)
    route("api", shop, certificate=cert)
    snap = compiler.compile_snapshot()
    [item] = snap["certificates"]
    assert item["hosts"] == ["shop.example.com", "*.shop.example.com"]
    assert item["fingerprint"] == cert.fingerprint and "BEGIN CERTIFICATE" in item["certificate_pem"]
    assert "private_key_pem" not in item
    assert "PRIVATE KEY" not in str(ConfigVersion.objects.latest().snapshot)


def test_it_includes_certificates_chosen_by_hostname():
    shop = tenant("shop")
    certificate("by-name", shop)
    certificate("unrelated", shop, names=("other.shop.example.com",))
    route("api", shop)
    assert [c["name"] for c in compiler.compile_snapshot()["certificates"]] == ["by-name"]


def test_it_materializes_private_keys_for_the_wire():
    shop = tenant("shop")
    cert = certificate("c", shop)
    route("api", shop, certificate=cert)
    snap = publisher.current_version().snapshot
    wire = compiler.materialize(snap)
    assert "PRIVATE KEY-----" in wire["certificates"][0]["private_key_pem"]
    assert "private_key_pem" not in snap["certificates"][0]
    assert schema.snapshot_hash(wire) == schema.snapshot_hash(snap)


def test_it_stores_private_keys_encrypted():
    cert = certificate("c")
    assert "PRIVATE KEY" not in cert.private_key_encrypted
    assert "PRIVATE KEY" in crypto.decrypt(cert.private_key_encrypted)


def test_it_creates_the_embedded_key_file_once_with_0600(settings, tmp_path):
    settings.SWITCHYARD_ENCRYPTION_KEY = ""
    settings.VAR_DIR = tmp_path
    token = crypto.encrypt("secret")
    key_file = tmp_path / "encryption_key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    content = key_file.read_bytes()
    crypto._from_key_file.cache_clear()
    assert crypto.decrypt(token) == "secret" and key_file.read_bytes() == content


def test_it_refuses_to_decrypt_with_another_key(settings):
    token = crypto.encrypt("secret")
    settings.SWITCHYARD_ENCRYPTION_KEY = "another key"
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(token)
    settings.SWITCHYARD_ENCRYPTION_KEY = "another key,test-encryption-key"
    assert crypto.decrypt(token) == "secret"


# ------------------------------------------------------------------ publish

def test_it_creates_one_version_per_accepted_change_with_its_sha256():
    r = route("api")
    before = versions()
    services.update_route(ACTOR, r, path="/v2")
    assert versions() == before + [before[-1] + 1]
    latest = publisher.current_version()
    assert latest.sha256 == schema.snapshot_hash(latest.snapshot) == schema.snapshot_hash(
        compiler.compile_snapshot())
    assert latest.snapshot["routes"][0]["path"] == "/v2"


def test_it_creates_no_version_for_a_no_op():
    r = route("api")
    before = versions()
    services.update_route(ACTOR, r, path="/")
    assert publisher.publish(ACTOR) is None
    assert versions() == before


def test_it_creates_no_version_for_a_refused_change():
    r = route("api")
    before = versions()
    with pytest.raises(ValidationError):
        services.update_route(ACTOR, r, hosts=["bad host"])
    assert versions() == before


def test_it_never_publishes_a_snapshot_the_data_plane_would_reject():
    route("api")
    Route.objects.update(path="no-slash")  # bypasses validation on purpose
    with pytest.raises(ValidationError) as exc:
        publisher.publish(ACTOR)
    assert exc.value.message_dict == {"path": ["route api: must start with / and contain no spaces, ? or #"]}


def test_it_numbers_versions_and_records_author_and_note():
    user = services.Actor(token_prefix="sy_abcdefg")
    services.create_pool(user, name="p", targets=[{"host": "127.0.0.1", "port": 1}])
    r = route("api")
    services.update_route(user, r, path="/x", note="move api")
    latest = publisher.current_version()
    assert latest.author == "token:sy_abcdefg" and latest.note == "move api"
    assert versions() == list(range(1, len(versions()) + 1))


def test_it_registers_a_notification_on_commit(django_capture_on_commit_callbacks, monkeypatch):
    sent = []
    monkeypatch.setattr(notify, "_send", sent.append)
    with django_capture_on_commit_callbacks(execute=True):
        route("api")
    assert sent and all(m == {"type": notify.CONFIG_CHANGED} for m in sent)
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(ValidationError):
            route("bad", hosts=["bad host"])
    assert sent == []


def test_it_rolls_back_everything_when_publish_fails(monkeypatch):
    def broken(*args, **kwargs):
        raise ValidationError({"snapshot": ["boom"]})
    monkeypatch.setattr(publisher, "publish", broken)
    with pytest.raises(ValidationError):
        pool("p")
    assert not Pool.objects.exists() and not AuditEntry.objects.exists()


# ------------------------------------------------------------------ rollback

def test_it_rolls_back_routes_pools_and_targets():
    r = route("api")
    good = publisher.current_version()
    services.update_route(ACTOR, r, path="/new", hosts=["other.localhost"])
    services.update_pool(ACTOR, r.pool, targets=[{"host": "127.0.0.1", "port": 9999}], retries=3)
    route("later")
    version = publisher.rollback(ACTOR, good.number, note="bad deploy")
    assert version.rolled_back_from == good.number and version.number == good.number + 4
    assert version.sha256 == good.sha256 and version.snapshot == good.snapshot
    r.refresh_from_db()
    assert (r.path, r.hosts) == ("/", ["api.localhost"])
    assert list(Target.objects.filter(pool=r.pool).values_list("port", flat=True)) == [8080]
    assert Pool.objects.get(pk=r.pool_id).retries == 1
    assert not Route.objects.get(name="later").enabled
    entry = AuditEntry.objects.filter(action="rollback").get()
    assert entry.note == "bad deploy" and entry.config_version == version.number


def test_it_recreates_deleted_rows_on_rollback():
    r = route("api")
    good = publisher.current_version()
    route_id, pool_id = r.pk, r.pool_id
    services.delete_route(ACTOR, r)
    services.delete_pool(ACTOR, Pool.objects.get(pk=pool_id))
    version = publisher.rollback(ACTOR, good.number)
    assert version.sha256 == good.sha256
    assert Route.objects.get(pk=route_id).pool_id == pool_id


def test_it_frees_a_name_taken_since_on_rollback():
    r = route("api")
    good, route_id = publisher.current_version(), r.pk
    services.delete_route(ACTOR, r)
    newer = route("api", hosts=["new.localhost"], pool_obj=Pool.objects.get())
    publisher.rollback(ACTOR, good.number)
    newer.refresh_from_db()
    assert not newer.enabled and newer.name.startswith("api (before rollback")
    assert Route.objects.get(pk=route_id).name == "api"


def test_it_refuses_a_rollback_to_an_unknown_version():
    with pytest.raises(ValidationError) as exc:
        publisher.rollback(ACTOR, 42)
    assert exc.value.message_dict == {"number": ["there is no version 42"]}


def test_it_refuses_a_rollback_that_needs_a_deleted_certificate():
    shop = tenant("shop")
    cert = certificate("c", shop)
    r = route("api", shop, certificate=cert)
    good = publisher.current_version()
    services.update_route(ACTOR, r, certificate=None, hosts=["x.shop.example.com"])
    services.update_route(ACTOR, r, hosts=["api.shop.example.com"])
    services.delete_route(ACTOR, r)
    services.delete_certificate(ACTOR, cert)
    count = ConfigVersion.objects.count()
    with pytest.raises(ValidationError) as exc:
        publisher.rollback(ACTOR, good.number)
    assert "upload it again" in exc.value.message_dict["number"][0]
    assert ConfigVersion.objects.count() == count


def test_it_rolls_back_to_the_live_version_as_a_no_op():
    route("api")
    latest = publisher.current_version()
    assert publisher.rollback(ACTOR, latest.number) is None


# ------------------------------------------------------------------ diff

def test_it_diffs_two_versions_field_by_field():
    r = route("api")
    a = publisher.current_version()
    services.update_route(ACTOR, r, path="/v2")
    services.update_pool(ACTOR, r.pool, retries=2)
    route("new")
    b = publisher.current_version()
    changes = publisher.diff(a, b)
    by_name = {(c["kind"], c["name"]): c for c in changes}
    api = by_name[("route", "api")]
    assert api["action"] == "changed" and api["fields"] == [{"field": "path", "before": "/", "after": "/v2"}]
    assert by_name[("pool", "api-pool")]["fields"] == [{"field": "retries", "before": 1, "after": 2}]
    assert by_name[("route", "new")]["action"] == "added"
    assert by_name[("pool", "new-pool")]["action"] == "added"
    assert [c["action"] for c in publisher.diff(b, a) if c["name"] == "new"] == ["removed"]
    assert publisher.diff(a, a) == []


def test_it_names_tenant_objects_with_their_tenant_in_a_diff():
    empty = ConfigVersion.objects.create(number=99, sha256="x", snapshot=schema.empty_snapshot())
    shop = tenant("shop")
    route("api", shop)
    changes = publisher.diff(empty, publisher.current_version())
    assert {c["name"] for c in changes} == {"shop/api", "shop/api-pool"}
