"""Change notes, audit, 400s naming the field with nothing changed, rollback and diff."""
import pytest

from controlplane.audit.models import AuditEntry
from controlplane.proxy.models import Certificate, Pool, Route, Target
from controlplane.publishing.models import ConfigVersion
from controlplane.tenancy.models import Delegation, Tenant
from tests.controlplane.helpers import PUBLIC_IP, issue

from .conftest import client_for

pytestmark = pytest.mark.django_db

BASE = "/api/v1"


def snapshot_db():
    return (list(Route.objects.order_by("id").values()), list(Pool.objects.order_by("id").values()),
            list(Target.objects.order_by("id").values()), list(Certificate.objects.order_by("id").values()),
            list(Tenant.objects.order_by("id").values()), list(Delegation.objects.order_by("id").values()),
            ConfigVersion.objects.count())


def test_it_records_the_change_note_in_the_audit_entry_and_the_version(world):
    api = client_for(world["a"].users["editor"])
    r = api.patch(f"{BASE}/routes/{world['a'].route.pk}/", {"path": "/v2"}, format="json",
                  HTTP_X_CHANGE_NOTE="move to v2 (JIRA-42)", REMOTE_ADDR="192.0.2.9")
    assert r.status_code == 200, r.json()
    entry = AuditEntry.objects.filter(object_type="route", action="update").latest("id")
    version = ConfigVersion.objects.latest()
    assert entry.note == "move to v2 (JIRA-42)" and version.note == "move to v2 (JIRA-42)"
    assert entry.actor == f"token:{api.token.prefix}" and version.author == f"token:{api.token.prefix}"
    assert entry.source_address == "192.0.2.9" and entry.tenant.slug == "alpha"
    assert entry.config_version == version.number
    assert (entry.before["path"], entry.after["path"]) == ("/", "/v2")
    assert client_for(world["a"].users["viewer"]).get(f"{BASE}/audit/{entry.pk}/").json()["note"] == entry.note


def test_it_audits_token_and_member_changes_with_the_note(world, staff_api):
    r = staff_api.post(f"{BASE}/api-tokens/", {"tenant": "beta", "role": "viewer"}, format="json",
                       HTTP_X_CHANGE_NOTE="for CI")
    entry = AuditEntry.objects.filter(object_type="apitoken", action="issue").latest("id")
    assert entry.note == "for CI" and entry.tenant.slug == "beta"
    assert r.json()["token"] not in str(entry.after)


@pytest.mark.parametrize("url, body, field", [
    ("routes/", {"tenant": "alpha", "name": "evil", "hosts": ["www.beta.example.com"], "pool": "POOL"}, "hosts"),
    ("routes/", {"tenant": "alpha", "name": "dup", "hosts": ["api.alpha.example.com"], "pool": "POOL"}, "hosts"),
    ("routes/", {"tenant": "alpha", "name": "bad", "hosts": ["x.alpha.example.com"], "pool": 99999}, "pool"),
    ("routes/", {"tenant": "alpha", "name": "hdr", "hosts": ["h.alpha.example.com"], "pool": "POOL",
                 "request_headers": {"set": [{"name": "Content-Length", "value": "1"}]}}, "request_headers"),
    ("routes/", {"tenant": "alpha", "name": "crlf", "hosts": ["c.alpha.example.com"], "pool": "POOL",
                 "response_headers": {"add": [{"name": "X-A", "value": "a\r\nb"}]}}, "response_headers"),
    ("routes/", {"tenant": "alpha", "name": "cert", "hosts": ["w.alpha.example.com"], "pool": "POOL",
                 "certificate": "BETACERT"}, "certificate"),
    ("routes/", {"tenant": "alpha", "hosts": []}, "hosts"),
    ("pools/", {"tenant": "alpha", "name": "local", "targets": [{"host": "127.0.0.1", "port": 80}]}, "targets"),
    ("pools/", {"tenant": "alpha", "name": "meta", "targets": [{"host": "169.254.169.254", "port": 80}]},
     "targets"),
    ("pools/", {"tenant": "alpha", "name": "hc", "health_check": {"type": "udp"}}, "health_check"),
    ("pools/", {"tenant": "alpha", "name": "alpha-web"}, "name"),
    ("certificates/", {"tenant": "alpha", "name": "junk", "certificate_pem": "nope", "private_key_pem": "nope"},
     "certificate_pem"),
    ("certificates/", {"tenant": "alpha", "name": "nokey", "certificate_pem": "CERT"}, "private_key_pem"),
    ("delegations/", {"tenant": "alpha", "suffix": "beta.example.com"}, "suffix"),
    ("delegations/", {"tenant": "alpha", "suffix": "x.beta.example.com"}, "suffix"),
    ("tenants/", {"slug": "alpha", "name": "again"}, "slug"),
    ("tenants/", {"slug": "nets", "name": "n", "allowed_networks": ["not-a-net"]}, "allowed_networks"),
    ("alert-channels/", {"tenant": "alpha", "name": "h", "kind": "webhook", "url": "http://127.0.0.1/"}, "url"),
    ("alert-channels/", {"tenant": "alpha", "name": "m", "kind": "email", "emails": ["nope"]}, "emails"),
])
def test_it_refuses_invalid_writes_naming_the_field_and_changing_nothing(world, staff_api, url, body, field):
    body = dict(body)
    if body.get("pool") == "POOL":
        body["pool"] = world["a"].pool.pk
    if body.get("certificate") == "BETACERT":
        body["certificate"] = world["b"].certificate.pk
    if body.get("certificate_pem") == "CERT":
        body["certificate_pem"] = issue("n.alpha.example.com")[0]
    before, audit = snapshot_db(), AuditEntry.objects.count()
    r = staff_api.post(f"{BASE}/{url}", body, format="json", HTTP_X_CHANGE_NOTE="should not land")
    assert r.status_code == 400, r.json()
    assert field in r.json(), r.json()
    assert snapshot_db() == before and AuditEntry.objects.count() == audit


def test_it_refuses_an_update_that_would_break_the_config(world, staff_api):
    a = world["a"]
    before = snapshot_db()
    r = staff_api.patch(f"{BASE}/pools/{a.pool.pk}/", {"targets": [{"host": PUBLIC_IP, "port": 8080,
                                                                      "enabled": False}]}, format="json")
    assert r.status_code == 400 and "targets" in r.json()
    r = staff_api.patch(f"{BASE}/certificates/{a.certificate.pk}/",
                        {"certificate_pem": issue("other.example.com")[0]}, format="json")
    assert r.status_code == 400 and set(r.json()) & {"certificate_pem", "private_key_pem"}
    r = staff_api.delete(f"{BASE}/pools/{a.pool.pk}/")
    assert r.status_code == 400 and "non_field_errors" in r.json()
    r = staff_api.delete(f"{BASE}/delegations/{a.delegation.pk}/")
    assert r.status_code == 400 and "suffix" in r.json()
    r = staff_api.patch(f"{BASE}/pools/{a.pool.pk}/", {"health_check": {"enabled": True, "healthy_threshold": 0}}, format="json")
    assert r.status_code == 400 and "healthy_threshold" in r.json()["health_check"], r.json()
    r = staff_api.patch(f"{BASE}/routes/{a.route.pk}/", {"tenant": "beta"}, format="json")
    assert r.status_code == 400 and "tenant" in r.json()
    assert snapshot_db() == before


def test_it_diffs_two_versions(world, staff_api):
    a = world["a"]
    old = ConfigVersion.objects.latest().number
    staff_api.patch(f"{BASE}/routes/{a.route.pk}/", {"path": "/new"}, format="json")
    new = ConfigVersion.objects.latest().number
    r = staff_api.get(f"{BASE}/versions/diff/?from={old}&to={new}")
    assert r.status_code == 200, r.json()
    assert r.json()["from"] == old and r.json()["to"] == new
    [change] = r.json()["changes"]
    assert (change["kind"], change["action"], change["id"]) == ("route", "changed", a.route.pk)
    assert {"field": "path", "before": "/", "after": "/new"} in change["fields"]
    assert staff_api.get(f"{BASE}/versions/diff/?from={old}&to=9999").json() == {
        "to": ["there is no version 9999"]}
    assert set(staff_api.get(f"{BASE}/versions/diff/?from=x").json()) == {"from", "to"}


def test_it_lists_and_shows_versions_by_number(world, staff_api):
    latest = ConfigVersion.objects.latest()
    listed = staff_api.get(f"{BASE}/versions/").json()
    assert listed["results"][0]["number"] == latest.number and "snapshot" not in listed["results"][0]
    shown = staff_api.get(f"{BASE}/versions/{latest.number}/").json()
    assert shown["sha256"] == latest.sha256 and shown["snapshot"] == latest.snapshot
    assert staff_api.get(f"{BASE}/versions/99999999999999999999/").status_code == 404


def test_it_rolls_back_to_a_version_with_the_note(world, staff_api):
    a = world["a"]
    good = ConfigVersion.objects.latest().number
    staff_api.patch(f"{BASE}/routes/{a.route.pk}/", {"path": "/broken"}, format="json")
    r = staff_api.post(f"{BASE}/versions/{good}/rollback/", HTTP_X_CHANGE_NOTE="undo the broken path")
    assert r.status_code == 200, r.json()
    assert r.json()["rolled_back_to"] == good
    new = ConfigVersion.objects.latest()
    assert r.json()["version"]["number"] == new.number and new.rolled_back_from == good
    assert new.note == "undo the broken path" and new.sha256 == ConfigVersion.objects.get(number=good).sha256
    assert Route.objects.get(pk=a.route.pk).path == "/"
    entry = AuditEntry.objects.filter(action="rollback").latest("id")
    assert entry.note == "undo the broken path" and entry.actor == f"token:{staff_api.token.prefix}"
    r = staff_api.post(f"{BASE}/versions/{new.number}/rollback/")
    assert r.status_code == 200 and r.json()["version"] is None  # already live: nothing to do


def test_it_lets_only_staff_roll_back(world, as_role):
    number = ConfigVersion.objects.latest().number
    assert as_role("owner").post(f"{BASE}/versions/{number}/rollback/").status_code == 404
