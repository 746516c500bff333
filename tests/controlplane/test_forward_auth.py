"""Forward auth on routes in the business layer: the stored form, the checks (syntax by
the node's schema, the tenant upstream policy on the URL), versions, audit, checkconfig
and the "why 4xx/5xx" notes."""
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from controlplane.audit.models import AuditEntry
from controlplane.proxy import services
from controlplane.proxy.models import Route
from controlplane.publishing.models import ConfigVersion
from dataplane import applier, schema

from .helpers import ACTOR, PUBLIC_IP, pool, route, tenant

pytestmark = pytest.mark.django_db

AUTHELIA = {"url": "https://auth.example.com/api/authz/forward-auth",
            "response_headers": ["Remote-User", "Remote-Groups", "Remote-Email", "Remote-Name"]}


def refused(func, *args, **kwargs) -> dict:
    with pytest.raises(ValidationError) as exc:
        func(*args, **kwargs)
    return exc.value.message_dict


def test_a_route_stores_forward_auth_and_the_snapshot_carries_it():
    r = route("app", forward_auth={**AUTHELIA, "url": " " + AUTHELIA["url"] + " "})
    assert Route.objects.get(pk=r.pk).forward_auth == {**AUTHELIA, "timeout": 5.0}
    snap = ConfigVersion.objects.latest("number").snapshot
    [entry] = [x for x in snap["routes"] if x["id"] == r.id]
    assert entry["forward_auth"] == {**AUTHELIA, "timeout": 5.0, "allowed_networks": []}
    applier.check_snapshot(snap)  # the node's own build accepts it
    assert schema.parse_snapshot(snap).routes[0].forward_auth.response_headers == tuple(AUTHELIA["response_headers"])
    audit = AuditEntry.objects.filter(object_type="route", object_id=str(r.pk)).latest("id")
    assert audit.after["forward_auth"]["url"] == AUTHELIA["url"]
    # off again: the key leaves the snapshot, a new version and an audit entry say so
    before = ConfigVersion.objects.latest("number").number
    services.update_route(ACTOR, Route.objects.get(pk=r.pk), forward_auth=None)
    snap = ConfigVersion.objects.latest("number").snapshot
    assert ConfigVersion.objects.latest("number").number == before + 1
    assert "forward_auth" not in snap["routes"][0]
    audit = AuditEntry.objects.filter(object_type="route", object_id=str(r.pk)).latest("id")
    assert audit.before["forward_auth"]["url"] == AUTHELIA["url"] and audit.after["forward_auth"] is None


def test_bad_settings_are_refused_naming_the_field():
    web = pool("web")
    errors = refused(route, "app", pool_obj=web, forward_auth={"url": "ftp://auth.example.com/", "response_headers": ["Host"],
                                                 "timeout": 99})
    assert set(errors) == {"forward_auth"}
    text = " ".join(errors["forward_auth"])
    assert "url: must start with http:// or https://" in text
    assert "response_headers[0]" in text and "Host" in text
    assert "timeout" in text
    assert refused(route, "app", pool_obj=web, forward_auth={"url": ""}) == {
        "forward_auth": ["url: must start with http:// or https://"]}
    assert "unknown key" in refused(route, "app", pool_obj=web, forward_auth={**AUTHELIA, "method": "POST"})["forward_auth"][0]
    assert not Route.objects.exists()


def test_a_tenant_auth_url_obeys_the_tenant_upstream_policy(settings):
    shop = tenant("shop")
    web = pool("web", shop)
    for url, says in (("http://127.0.0.1:9091/api/verify", "127.0.0.1"),
                      ("http://169.254.169.254/latest", "169.254.169.254"),
                      ("http://localhost:9091/", "loopback name"),
                      ("http://[::ffff:10.0.0.1]/", "tenant")):
        errors = refused(route, "app", shop, pool_obj=web, forward_auth={"url": url})
        assert list(errors) == ["forward_auth"] and says in " ".join(errors["forward_auth"]), (url, errors)
    # the control plane itself, even where the tenant may reach loopback
    settings.SWITCHYARD_RESERVED_ENDPOINTS = ["127.0.0.1:8000"]
    services.update_tenant(ACTOR, shop, allowed_networks=["127.0.0.0/8"])
    errors = refused(route, "app", shop, pool_obj=web, forward_auth={"url": "http://127.0.0.1:8000/auth"})
    assert "control plane" in " ".join(errors["forward_auth"])
    r = route("app", shop, pool_obj=web, forward_auth={"url": "http://127.0.0.1:9091/api/verify"})  # allowed network
    [entry] = ConfigVersion.objects.latest("number").snapshot["routes"]
    assert entry["forward_auth"]["allowed_networks"] == ["127.0.0.0/8"]
    assert r.forward_auth["url"] == "http://127.0.0.1:9091/api/verify"
    other = route("pub", tenant("other"), forward_auth={"url": f"http://{PUBLIC_IP}/auth"})
    assert other.forward_auth["url"] == f"http://{PUBLIC_IP}/auth"


def test_checkconfig_names_a_stored_bad_forward_auth():
    r = route("app", forward_auth=AUTHELIA)
    Route.objects.filter(pk=r.pk).update(forward_auth={"url": "http://auth.example.com/#frag"})
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("checkconfig", "--schema-only", stdout=out)
    assert "routes[0].forward_auth.url" in out.getvalue() and "fragment" in out.getvalue()


def test_why_4xx_and_5xx_name_the_forward_auth():
    from controlplane.diagnostics.services.errors import explained_errors

    r = route("app", forward_auth=AUTHELIA)
    summary = {"errors_by_type": [{"type": "http_request_denied", "count": 3, "status": 302},
                                  {"type": "http_response_timeout", "count": 1, "status": 503}]}
    denied, timeout = explained_errors(summary, r)
    assert denied["policy"]["forward_auth"] == AUTHELIA["url"] and "forward auth" in denied["check"]
    assert timeout["policy"]["forward_auth"] == AUTHELIA["url"] and "5 s" in timeout["check"]
