"""A proxy host in one step (``proxy.hosts.create_proxy_host``): one pool and one route
from host names and upstream URLs, published as one version, refused as a whole with
each problem on the field it is about, inside the tenant's delegations and upstream
policy."""
import pytest
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from controlplane.acme.models import Order
from controlplane.audit.models import AuditEntry
from controlplane.proxy import hosts
from controlplane.proxy.models import Pool, Route
from controlplane.publishing import publisher
from controlplane.publishing.models import ConfigVersion

from .helpers import ACTOR, PUBLIC_IP, certificate, route, tenant

pytestmark = pytest.mark.django_db


def refused(**kwargs) -> dict:
    before = (ConfigVersion.objects.count(), Pool.objects.count(), Route.objects.count())
    with pytest.raises(ValidationError) as exc:
        hosts.create_proxy_host(ACTOR, **kwargs)
    assert (ConfigVersion.objects.count(), Pool.objects.count(), Route.objects.count()) == before
    return exc.value.message_dict


def test_it_creates_a_pool_and_a_route_as_one_version():
    before = publisher.current_version()
    made = hosts.create_proxy_host(ACTOR, hosts=["app.localhost", "www.app.localhost"],
                                   upstreams=["http://127.0.0.1:8080", "http://127.0.0.2:8081"], note="one step")
    version = publisher.current_version()
    assert made.version == version and version.number == (before.number if before else 0) + 1
    assert version.note == "one step"
    assert [(r["name"], r["hosts"]) for r in version.snapshot["routes"]] == [
        ("app.localhost", ["app.localhost", "www.app.localhost"])]
    (pool,) = version.snapshot["pools"]
    assert pool["name"] == "app.localhost" and pool["tls"]["enabled"] is False
    assert [(t["host"], t["port"]) for t in pool["targets"]] == [("127.0.0.1", 8080), ("127.0.0.2", 8081)]
    assert made.route.pool_id == made.pool.pk
    entries = AuditEntry.objects.filter(object_type__in=("pool", "route")).order_by("id")
    assert [(e.object_type, e.action, e.config_version, e.note) for e in entries] == [
        ("pool", "create", version.number, "one step"), ("route", "create", version.number, "one step")]


def test_an_https_upstream_gets_tls_to_the_upstream_and_default_ports():
    made = hosts.create_proxy_host(ACTOR, hosts=["secure.localhost"],
                                   upstreams=["https://127.0.0.1", "https://[::1]:8443/"])
    assert made.pool.tls_enabled and made.pool.tls_verify
    assert sorted(made.pool.targets.values_list("host", "port")) == [("127.0.0.1", 443), ("::1", 8443)]


def test_a_url_without_scheme_is_http_on_port_80():
    made = hosts.create_proxy_host(ACTOR, hosts=["plain.localhost"], upstreams=["127.0.0.1"])
    assert not made.pool.tls_enabled
    assert list(made.pool.targets.values_list("host", "port")) == [("127.0.0.1", 80)]


def test_options_reach_the_route():
    cert = certificate("local", names=("app.localhost",))
    made = hosts.create_proxy_host(ACTOR, hosts=["app.localhost"], upstreams=["http://127.0.0.1:9000"],
                                   certificate=cert.pk, https_redirect=True, websocket=True)
    assert (made.route.certificate_id, made.route.https_redirect, made.route.websocket) == (cert.pk, True, True)
    routes = publisher.current_version().snapshot["routes"]
    assert routes[0]["https_redirect"] is True and routes[0]["websocket"] is True


def test_names_come_from_the_first_host_and_stay_unique():
    first = hosts.create_proxy_host(ACTOR, hosts=["app.localhost"], upstreams=["http://127.0.0.1:9000"])
    assert (first.route.name, first.pool.name) == ("app.localhost", "app.localhost")
    Route.objects.filter(pk=first.route.pk).update(hosts=["moved.localhost"])
    second = hosts.create_proxy_host(ACTOR, hosts=["app.localhost"], upstreams=["http://127.0.0.1:9001"])
    assert (second.route.name, second.pool.name) == ("app.localhost-2", "app.localhost-2")


def test_a_name_given_is_used_as_is_and_refused_when_taken():
    hosts.create_proxy_host(ACTOR, hosts=["a.localhost"], upstreams=["http://127.0.0.1:9000"], name="shop")
    errors = refused(hosts=["b.localhost"], upstreams=["http://127.0.0.1:9000"], name="shop")
    assert errors["name"] == ["the platform already has a pool named shop",
                              "the platform already has a route named shop"]


def test_each_problem_is_on_its_field_and_nothing_is_stored():
    errors = refused(hosts=["bad host!"], upstreams=["ftp://127.0.0.1:21", "http://127.0.0.1/api"],
                     https_redirect=True)
    assert any("invalid host name" in m for m in errors["hosts"])
    assert any("only http:// and https://" in m for m in errors["upstreams"])
    assert any("a path is not supported" in m for m in errors["upstreams"])
    assert errors["https_redirect"] == ["needs a certificate: choose one under TLS, or leave the redirect off"]


def test_empty_fields_are_required():
    errors = refused(hosts=[], upstreams=[])
    assert errors["hosts"] == ["needs at least one host name, e.g. app.example.com"]
    assert errors["upstreams"] == ["needs at least one upstream URL, e.g. http://10.0.0.5:8080"]
    assert "name" not in errors


def test_mixed_schemes_are_refused():
    errors = refused(hosts=["mix.localhost"], upstreams=["http://127.0.0.1:80", "https://127.0.0.2:443"])
    assert errors["upstreams"] == ["mix of http:// and https://: a pool talks to all its targets the same way"]


def test_a_host_already_served_the_same_way_is_refused_and_the_pool_is_not_kept():
    route("taken", hosts=["taken.localhost"])
    errors = refused(hosts=["taken.localhost"], upstreams=["http://127.0.0.1:9000"])
    assert errors["hosts"] == ["taken.localhost / (prefix) is already matched the same way by route taken"]
    assert not Pool.objects.filter(name="taken.localhost").exists()


def test_a_certificate_that_does_not_cover_the_host_is_refused():
    cert = certificate("other", names=("other.localhost",))
    errors = refused(hosts=["app.localhost"], upstreams=["http://127.0.0.1:9000"], certificate=cert.pk)
    assert errors["certificate"] == [
        "certificate other does not cover app.localhost (it covers other.localhost)"]


def test_acme_is_refused_where_it_is_not_configured(settings):
    settings.SWITCHYARD_ACME_DIRECTORY = ""
    errors = refused(hosts=["app.localhost"], upstreams=["http://127.0.0.1:9000"], acme=True)
    assert errors["acme"] == ["automatic certificates are off in this installation "
                              "(the operator has not set SWITCHYARD_ACME_DIRECTORY)"]


def test_acme_orders_a_certificate_for_the_hosts_where_configured(settings):
    settings.SWITCHYARD_ACME_DIRECTORY = "https://ca.invalid/dir"
    made = hosts.create_proxy_host(ACTOR, hosts=["app.localhost", "www.app.localhost"],
                                   upstreams=["http://127.0.0.1:9000"], acme=True, https_redirect=True)
    assert made.route.acme
    order = Order.objects.get(route=made.route)
    assert (order.names, order.state) == (["app.localhost", "www.app.localhost"], Order.PENDING)


def test_a_tenant_stays_inside_its_delegations_and_upstream_policy():
    shop = tenant("shop")
    errors = refused(tenant=shop, hosts=["app.acme.example.com"], upstreams=["http://127.0.0.1:8080"])
    assert errors["hosts"] == ["app.acme.example.com is outside tenant shop's delegations"]
    assert any("loopback" in m for m in errors["upstreams"])
    made = hosts.create_proxy_host(ACTOR, tenant=shop, hosts=["app.shop.example.com"],
                                   upstreams=[f"http://{PUBLIC_IP}:8080"])
    assert made.route.tenant == shop and made.pool.tenant == shop
    labels = [r["tenant"] for r in publisher.current_version().snapshot["routes"]]
    assert labels == ["shop"]


def test_a_tenant_cannot_use_another_owners_certificate():
    shop, acme = tenant("shop"), tenant("acme")
    acme_cert = certificate("acme-cert", acme, names=("acme.example.com",))
    errors = refused(tenant=shop, hosts=["app.shop.example.com"], upstreams=[f"http://{PUBLIC_IP}:8080"],
                     certificate=acme_cert.pk)
    assert errors["certificate"] == [f"unknown certificate {acme_cert.pk}"]
    assert NON_FIELD_ERRORS not in errors


def test_a_tenant_quota_is_kept():
    shop = tenant("shop", max_routes=1)
    hosts.create_proxy_host(ACTOR, tenant=shop, hosts=["a.shop.example.com"], upstreams=[f"http://{PUBLIC_IP}:80"])
    errors = refused(tenant=shop, hosts=["b.shop.example.com"], upstreams=[f"http://{PUBLIC_IP}:81"])
    assert any("at most 1 routes" in m for m in errors["tenant"])


@pytest.mark.parametrize("url, message", [
    ("http://", "no host"),
    ("http://127.0.0.1:99999", "not a URL"),
    ("http://user:pw@127.0.0.1", "credentials"),
    ("http://127.0.0.1/?q=1", "a path is not supported"),
])
def test_it_explains_an_upstream_url_it_cannot_use(url, message):
    with pytest.raises(ValueError, match=message):
        hosts.parse_upstream(url)
