"""Business rules checked before anything is stored: one error per field."""
import pytest
from django.core.exceptions import ValidationError

from controlplane.proxy import services
from controlplane.proxy.models import Pool, Route, Target
from controlplane.publishing.models import ConfigVersion
from controlplane.tenancy.models import Delegation

from .helpers import ACTOR, certificate, pool, route, tenant

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def encryption_key(settings):
    settings.SWITCHYARD_ENCRYPTION_KEY = "test-encryption-key"


def refused(func, *args, **kwargs) -> dict:
    with pytest.raises(ValidationError) as exc:
        func(*args, **kwargs)
    return exc.value.message_dict


# ------------------------------------------------------------------ hosts

def test_it_normalises_hosts():
    r = route("api", hosts=["API.Localhost.", "api.localhost", "*.Wild.LOCALHOST"])
    assert r.hosts == ["api.localhost", "*.wild.localhost"]


def test_it_stores_idna_hosts_as_ascii():
    shop = tenant("shop", "bücher.example")
    r = route("books", shop, hosts=["Bücher.example."])
    assert r.hosts == ["xn--bcher-kva.example"]


def test_it_refuses_invalid_hosts_naming_the_field():
    errors = refused(route, "bad", hosts=["not a host"])
    assert list(errors) == ["hosts"] and "invalid host name" in errors["hosts"][0]
    assert "hosts" in refused(route, "empty", hosts=[])


def test_it_refuses_hosts_outside_the_tenant_delegations():
    shop = tenant("shop")
    errors = refused(route, "api", shop, hosts=["api.shop.example.com", "demo.example.com"])
    assert errors == {"hosts": ["demo.example.com is outside tenant shop's delegations"]}
    assert not Route.objects.exists()


def test_it_accepts_the_delegated_suffix_itself_and_wildcards_below_it():
    shop = tenant("shop")
    r = route("api", shop, hosts=["SHOP.example.com.", "*.shop.example.com"])
    assert r.hosts == ["shop.example.com", "*.shop.example.com"]


def test_it_lets_platform_routes_use_any_host():
    assert route("edge", hosts=["anything.example.org"]).pk


# ------------------------------------------------------------------ overlaps

def test_it_refuses_an_overlapping_route():
    web = pool("web")
    route("a", hosts=["x.localhost"], pool_obj=web, methods=["GET", "POST"])
    errors = refused(route, "b", hosts=["X.localhost."], pool_obj=web, methods=["post", "get"])
    assert errors == {"hosts": ["x.localhost / (prefix) is already matched the same way by route a"]}


def test_it_allows_routes_that_differ_by_path_method_or_header():
    web = pool("web")
    route("a", hosts=["x.localhost"], pool_obj=web)
    route("b", hosts=["x.localhost"], pool_obj=web, path="/api")
    route("c", hosts=["x.localhost"], pool_obj=web, methods=["GET"])
    route("d", hosts=["x.localhost"], pool_obj=web, headers=[{"name": "X-Env", "value": "beta"}])
    assert Route.objects.count() == 4


def test_it_checks_overlaps_across_tenants_without_naming_the_other_route():
    shop = tenant("shop")
    route("mine", shop, hosts=["a.shop.example.com"])
    errors = refused(route, "edge", hosts=["a.shop.example.com"])
    assert errors["hosts"] == ["a.shop.example.com / (prefix) is already matched the same way by "
                               "another tenant's route"]


def test_it_ignores_disabled_routes_when_checking_overlaps():
    web = pool("web")
    old = route("old", hosts=["x.localhost"], pool_obj=web)
    services.update_route(ACTOR, old, enabled=False)
    assert route("new", hosts=["x.localhost"], pool_obj=web).pk
    assert "hosts" in refused(services.update_route, ACTOR, old, enabled=True)


# ------------------------------------------------------------------ delegations

@pytest.mark.parametrize("suffix", ["shop.example.com", "SHOP.Example.COM.", "example.com", "a.shop.example.com"])
def test_it_refuses_delegations_that_meet_another_tenant(suffix):
    tenant("shop", "shop.example.com")
    other = services.create_tenant(ACTOR, slug="other", name="Other")
    errors = refused(services.create_delegation, ACTOR, other, suffix)
    assert list(errors) == ["suffix"] and "delegated to tenant shop" in errors["suffix"][0]


def test_it_treats_idna_variants_as_the_same_name():
    tenant("shop", "bücher.example")
    other = services.create_tenant(ACTOR, slug="other", name="Other")
    assert "suffix" in refused(services.create_delegation, ACTOR, other, "XN--BCHER-KVA.example.")


def test_it_stores_delegations_normalised():
    shop = tenant("shop", "Shop.Example.COM.")
    assert list(shop.delegations.values_list("suffix", flat=True)) == ["shop.example.com"]


def test_it_allows_sibling_delegations():
    tenant("shop", "shop.example.com")
    tenant("blog", "blog.example.com")
    assert Delegation.objects.count() == 2


def test_it_refuses_removing_a_delegation_routes_need():
    shop = tenant("shop")
    route("api", shop)
    errors = refused(services.delete_delegation, ACTOR, shop.delegations.get())
    assert errors == {"suffix": ["route api uses api.shop.example.com, which only shop.example.com covers"]}


# ------------------------------------------------------------------ pools and targets

def test_it_refuses_an_unknown_pool():
    assert refused(services.create_route, ACTOR, name="r", hosts=["r.localhost"], pool=999) == {
        "pool": ["unknown pool 999"]}


def test_it_refuses_a_pool_of_another_tenant():
    shop, blog = tenant("shop"), tenant("blog")
    theirs = pool("theirs", blog)
    assert refused(route, "api", shop, pool_obj=theirs) == {"pool": [f"unknown pool {theirs.pk}"]}


def test_it_refuses_a_pool_without_enabled_targets():
    drained = pool("drained", targets=[{"host": "127.0.0.1", "port": 81, "state": "draining"}])
    assert refused(route, "r", pool_obj=drained) == {"pool": ["pool drained has no enabled targets"]}


def test_it_refuses_disabling_the_last_target_of_a_used_pool():
    r = route("r")
    errors = refused(services.update_pool, ACTOR, r.pool, targets=[{"host": "127.0.0.1", "port": 8080,
                                                                      "state": "disabled"}])
    assert errors == {"targets": ["routes r use this pool: keep at least one enabled target"]}


def test_it_refuses_deleting_a_pool_in_use():
    r = route("r")
    errors = refused(services.delete_pool, ACTOR, r.pool)
    assert errors == {"__all__": ["pool r-pool is used by routes r; point them elsewhere first"]}


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "127.1",
                                  "[::ffff:127.0.0.1]", "::1", "169.254.169.254", "10.0.0.5", "localhost"])
def test_it_refuses_forbidden_addresses_for_tenant_pools(host):
    shop = tenant("shop")
    errors = refused(pool, "p", shop, targets=[{"host": host, "port": 80}])
    assert list(errors) == ["targets"] and "tenant targets may not use it" in errors["targets"][0]
    assert not Pool.objects.exists()


@pytest.mark.parametrize("host, stored", [("127.0.0.1", "127.0.0.1"), ("2130706433", "127.0.0.1"),
                                          ("0177.0.0.1", "127.0.0.1"), ("127.1", "127.0.0.1"),
                                          ("[::ffff:127.0.0.1]", "::ffff:7f00:1"), ("[::1]", "::1"),
                                          ("Backend.Internal.", "backend.internal")])
def test_it_allows_any_address_for_platform_pools_in_canonical_form(host, stored):
    p = pool("p", targets=[{"host": host, "port": 80}])
    assert list(p.targets.values_list("host", flat=True)) == [stored]


def test_it_refuses_a_name_resolving_to_a_forbidden_address(monkeypatch):
    from controlplane.tenancy import upstream_policy
    monkeypatch.setattr(upstream_policy.socket, "getaddrinfo",
                        lambda host, port, proto=0: [(2, 1, 6, "", ("10.9.8.7", 0))])
    shop = tenant("shop")
    errors = refused(pool, "p", shop, targets=[{"host": "db.example.net", "port": 5432}])
    assert errors["targets"][0].startswith("db.example.net resolves to 10.9.8.7, a private address")


def test_it_allows_a_forbidden_address_inside_the_tenant_allowed_networks():
    shop = tenant("shop", allowed_networks=["10.20.0.0/16"])
    p = pool("p", shop, targets=[{"host": "10.20.1.2", "port": 80}])
    assert p.targets.get().host == "10.20.1.2"


def test_it_refuses_narrowing_allowed_networks_under_used_targets():
    shop = tenant("shop", allowed_networks=["10.20.0.0/16"])
    pool("p", shop, targets=[{"host": "10.20.1.2", "port": 80}])
    errors = refused(services.update_tenant, ACTOR, shop, allowed_networks=[])
    assert list(errors) == ["allowed_networks"] and "pool p: 10.20.1.2" in errors["allowed_networks"][0]


def test_it_refuses_invalid_allowed_networks():
    errors = refused(services.create_tenant, ACTOR, slug="t", name="T", allowed_networks=["10.0.0.0/8", "lan"])
    assert errors == {"allowed_networks": ["'lan': not a network (write e.g. 10.20.0.0/16)"]}


def test_it_refuses_duplicate_and_invalid_targets():
    errors = refused(pool, "p", targets=[{"host": "127.0.0.1", "port": 80}, {"host": "127.0.0.1", "port": 80},
                                         {"host": "127.0.0.1", "port": 70000}])
    assert "127.0.0.1:80 is listed twice" in errors["targets"]
    assert "127.0.0.1:70000: port must be between 1 and 65535" in errors["targets"]


def test_it_reports_schema_field_errors_under_model_field_names():
    errors = refused(pool, "p", connect_timeout=0.0, health_check_enabled=True, health_check_interval=0.1,
                     health_check_expected_statuses="ok")
    assert errors["connect_timeout"] == ["must be between 0.05 and 300.0"]
    assert errors["health_check_interval"] == ["must be between 1.0 and 3600.0"]
    assert errors["health_check_expected_statuses"] == ["must look like 200-399 or 200,204"]


def test_it_refuses_duplicate_pool_names_of_the_platform():
    pool("web")
    assert refused(pool, "web") == {"name": ["the platform already has a pool named web"]}


# ------------------------------------------------------------------ header rules

NOT_A_VALUE = ("a header value is visible US-ASCII text with spaces or tabs inside (no control characters "
               "such as CR, LF, NUL, VT or DEL; no non-ASCII text)")


@pytest.mark.parametrize("rules, message", [
    ({"set": [{"name": "X-A", "value": "a\r\nInjected: 1"}]},
     f"set[0].value: contains U+000D (a control character): {NOT_A_VALUE}"),
    ({"set": [{"name": "Host", "value": "evil"}]}, "set[0].name: header rules may not touch Host"),
    ({"add": [{"name": "X-Forwarded-For", "value": "1.2.3.4"}]},
     "add[0].name: header rules may not touch X-Forwarded-For"),
    ({"remove": ["Content-Length"]}, "remove[0]: header rules may not touch Content-Length"),
    ({"set": [{"name": "Bad Name", "value": "x"}]},
     "set[0].name: 'Bad Name' is not a valid header name: it contains U+0020 (a space); "
     "use letters, digits and !#$%&'*+-.^_`|~ only (RFC 9110 token)"),
])
def test_it_refuses_dangerous_header_rules(rules, message):
    errors = refused(route, "r", request_headers=rules)
    assert errors == {"request_headers": [message]}


def test_it_refuses_nul_in_response_header_rules():
    errors = refused(route, "r", response_headers={"set": [{"name": "X-A", "value": "a\x00"}]})
    assert errors == {"response_headers": [f"set[0].value: contains U+0000 (a control character): {NOT_A_VALUE}"]}


def test_it_refuses_an_invalid_regex_path():
    errors = refused(route, "r", path="([", path_type="regex")
    assert list(errors) == ["path"] and "invalid regular expression" in errors["path"][0]


def test_it_accepts_safe_header_rules():
    r = route("r", request_headers={"set": [{"name": "X-Env", "value": "prod"}], "remove": ["X-Debug"]})
    assert r.pk


# ------------------------------------------------------------------ certificates

def test_it_refuses_a_certificate_that_does_not_cover_the_hosts():
    shop = tenant("shop", "shop.example.com", "shop.example.net")
    cert = certificate("c", shop)
    errors = refused(route, "api", shop, hosts=["a.shop.example.com", "shop.example.net"], certificate=cert)
    assert errors == {"certificate": ["certificate c does not cover shop.example.net "
                                      "(it covers shop.example.com, *.shop.example.com)"]}


def test_it_accepts_a_certificate_covering_the_hosts():
    shop = tenant("shop")
    cert = certificate("c", shop)
    assert route("api", shop, hosts=["shop.example.com", "a.shop.example.com"], certificate=cert.pk).pk


def test_it_refuses_another_tenant_certificate():
    shop, blog = tenant("shop"), tenant("blog")
    cert = certificate("c", blog, names=("blog.example.com",))
    assert refused(route, "api", shop, hosts=["a.shop.example.com"], certificate=cert) == {
        "certificate": [f"unknown certificate {cert.pk}"]}


def test_it_refuses_a_certificate_with_a_mismatched_key():
    from .helpers import issue
    pem, _ = issue("a.localhost")
    _, other_key = issue("b.localhost")
    errors = refused(services.create_certificate, ACTOR, name="c", certificate_pem=pem, private_key_pem=other_key)
    assert list(errors) == ["private_key_pem"] and "does not match" in errors["private_key_pem"][0]


# ------------------------------------------------------------------ quotas

def test_it_enforces_the_route_quota():
    shop = tenant("shop", max_routes=1)
    route("one", shop)
    errors = refused(route, "two", shop, pool_obj=Pool.objects.get())
    assert errors == {"tenant": ["tenant shop may have at most 1 routes (quota max_routes); "
                                 "delete one or ask the platform operator for more"]}


def test_it_enforces_the_pool_quota():
    shop = tenant("shop", max_pools=1)
    pool("one", shop)
    assert "max_pools" in refused(pool, "two", shop)["tenant"][0]


def test_it_enforces_the_target_quota_across_pools():
    shop = tenant("shop", max_targets=2)
    pool("one", shop)
    targets = [{"host": "93.184.216.34", "port": 80}, {"host": "93.184.216.34", "port": 81}]
    assert "max_targets" in refused(pool, "two", shop, targets=targets)["tenant"][0]
    assert pool("two", shop, targets=targets[:1]).pk


def test_it_enforces_the_certificate_quota():
    shop = tenant("shop", max_certificates=1)
    certificate("one", shop)
    assert "max_certificates" in refused(certificate, "two", shop)["tenant"][0]


def test_it_counts_an_updated_object_once_against_its_quota():
    shop = tenant("shop", max_routes=1)
    r = route("one", shop)
    assert services.update_route(ACTOR, r, priority=5).priority == 5


# ------------------------------------------------------------------ nothing stored

def test_it_stores_nothing_for_a_refused_change():
    web = pool("web")
    versions, targets = ConfigVersion.objects.count(), Target.objects.count()
    refused(services.update_pool, ACTOR, web, name="", targets=[{"host": "127.0.0.1", "port": 0}])
    web.refresh_from_db()
    assert web.name == "web" and ConfigVersion.objects.count() == versions
    assert Target.objects.count() == targets


def test_it_accepts_enabled_as_a_boolean_in_targets():
    p = pool("p", targets=[{"host": "127.0.0.1", "port": 80, "enabled": False},
                           {"host": "127.0.0.1", "port": 81, "enabled": True}])
    assert sorted(p.targets.values_list("port", "state")) == [(80, "disabled"), (81, "enabled")]
