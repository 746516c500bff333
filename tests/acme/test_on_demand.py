"""On-demand TLS on the control plane, without a CA: which reported names become orders
(``ondemand.consider``), what the cheap triage in front of it drops (``ondemand.reported``),
the ask check against a real HTTP server, where the issued certificate goes, and the
node-side set of unknown SNI names."""
from __future__ import annotations

import http.server
import threading
import time

import pytest
from django.core.exceptions import ValidationError

from controlplane.acme import ondemand, services
from controlplane.acme.models import OnDemandRefusal, Order
from controlplane.proxy import services as proxy_services
from controlplane.publishing.compiler import compile_snapshot
from controlplane.tenancy.models import Delegation
from dataplane import schema
from dataplane.ondemand import UnknownSni
from dataplane.tls import CertTable
from tests.controlplane.helpers import ACTOR, certificate, issue, route, tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme_on(settings):
    settings.SWITCHYARD_ACME_DIRECTORY = "https://ca.invalid/dir"
    settings.SWITCHYARD_ACME_ON_DEMAND_ASK = ""
    ondemand.TRIAGE.reset()
    yield settings
    ondemand.TRIAGE.reset()


def on_demand(suffix, **limits):
    d = Delegation.objects.get(suffix=suffix)
    return proxy_services.update_delegation_on_demand(ACTOR, d, on_demand_tls=True, **limits)


@pytest.fixture
def t1(acme_on):
    t = tenant("t1", "apps.t1.example", "plain.t1.example")
    route("apps", owner=t, hosts=["*.apps.t1.example"])
    route("plain", owner=t, hosts=["*.plain.t1.example"])
    on_demand("apps.t1.example")
    return t


def test_a_name_a_wildcard_route_serves_below_an_on_demand_delegation_is_ordered(t1):
    decision = ondemand.consider("new.apps.t1.example")
    assert decision.outcome == ondemand.ORDERED
    order = Order.objects.get(pk=decision.order_id)
    assert (order.on_demand, order.host, order.names, order.route_id) == (True, "new.apps.t1.example",
                                                                          ["new.apps.t1.example"], None)
    assert order.delegation.suffix == "apps.t1.example" and order.via_route.name == "apps"
    assert order.state == Order.PENDING and order.challenge == "http-01"
    assert services.order_method(order) == "http-01"
    assert order.pk in services.due_orders(order.requested)  # the issuance path picks it up
    # the same name again: the order exists, nothing new, no refusal
    assert ondemand.consider("new.apps.t1.example").outcome == ondemand.IGNORED
    assert Order.objects.filter(on_demand=True).count() == 1 and not OnDemandRefusal.objects.exists()


def test_the_route_s_challenge_choice_is_the_order_s(t1):
    r = route("alpn", owner=t1, hosts=["*.x.apps.t1.example"], acme_challenge="tls-alpn-01")
    assert r.acme_challenge == "tls-alpn-01"
    order = Order.objects.get(pk=ondemand.consider("a.x.apps.t1.example").order_id)
    assert order.via_route_id == r.pk and order.challenge == "tls-alpn-01"


@pytest.mark.parametrize("name", ["new.plain.t1.example",    # delegation without on-demand
                                  "new.apps.t2.example",     # outside every delegation
                                  "-bad-.apps.t1.example"])  # not a host name
def test_names_without_on_demand_are_ignored_without_a_trace(t1, name):
    assert ondemand.consider(name).outcome == ondemand.IGNORED
    assert not Order.objects.exists() and not OnDemandRefusal.objects.exists()


def test_a_name_no_route_of_the_tenant_serves_is_refused_and_shown(t1):
    Delegation.objects.filter(suffix="apps.t1.example").update(suffix="t1.example")  # wider than the route
    decision = ondemand.consider("www.t1.example")
    assert decision.outcome == ondemand.REFUSED and "no enabled route of tenant t1" in decision.reason
    state = ondemand.state_of(Delegation.objects.get(suffix="t1.example"))
    assert [r["name"] for r in state["refusals"]] == ["www.t1.example"] and state["used"] == 0


def test_the_quota_and_the_hourly_rate_refuse_and_only_the_targeted_tenant_pays(t1):
    on_demand("apps.t1.example", on_demand_max_certificates=2, on_demand_max_per_hour=10)
    assert [ondemand.consider(f"n{i}.apps.t1.example").outcome for i in range(3)] == [
        ondemand.ORDERED, ondemand.ORDERED, ondemand.REFUSED]
    refusal = OnDemandRefusal.objects.get(name="n2.apps.t1.example")
    assert refusal.reason.startswith("quota: 2 of 2 on-demand certificates below apps.t1.example")
    on_demand("apps.t1.example", on_demand_max_certificates=10, on_demand_max_per_hour=2)
    decision = ondemand.consider("n3.apps.t1.example")
    assert decision.outcome == ondemand.REFUSED and decision.reason.startswith("rate limit: 2 of 2")
    # another tenant's suffix is untouched by t1's exhausted limits
    t2 = tenant("t2", "apps.t2.example")
    route("apps2", owner=t2, hosts=["*.apps.t2.example"])
    on_demand("apps.t2.example")
    assert ondemand.consider("n0.apps.t2.example").outcome == ondemand.ORDERED


def test_refusals_are_kept_bounded_one_row_per_name(t1):
    on_demand("apps.t1.example", on_demand_max_certificates=0)
    for i in range(ondemand.KEEP_REFUSALS + 10):
        ondemand.consider(f"r{i}.apps.t1.example")
    ondemand.consider("r0x.apps.t1.example")
    ondemand.consider("r0x.apps.t1.example")
    assert OnDemandRefusal.objects.count() == ondemand.KEEP_REFUSALS
    assert OnDemandRefusal.objects.get(name="r0x.apps.t1.example").count == 2


def test_a_certificate_the_tenant_has_means_no_order(t1):
    certificate("own", owner=t1, names=("have.apps.t1.example",))
    assert ondemand.consider("have.apps.t1.example").outcome == ondemand.IGNORED
    assert not Order.objects.exists()


class _Ask(http.server.BaseHTTPRequestHandler):
    allowed: set = set()
    asked: list = []
    slow: set = set()

    def do_GET(self):
        from urllib.parse import parse_qs, urlsplit

        domain = parse_qs(urlsplit(self.path).query).get("domain", [""])[0]
        _Ask.asked.append(domain)
        if domain in _Ask.slow:
            time.sleep(2)
        self.send_response(200 if domain in _Ask.allowed else 403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def ask_server(acme_on):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ask)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Ask.allowed, _Ask.asked, _Ask.slow = {"yes.apps.t1.example", "slow.apps.t1.example"}, [], {"slow.apps.t1.example"}
    acme_on.SWITCHYARD_ACME_ON_DEMAND_ASK = f"http://127.0.0.1:{server.server_port}/check"
    acme_on.SWITCHYARD_ACME_ON_DEMAND_ASK_TIMEOUT = 0.5
    yield server
    server.shutdown()
    server.server_close()


def test_the_ask_endpoint_decides_and_a_timeout_refuses(t1, ask_server):
    assert ondemand.consider("yes.apps.t1.example").outcome == ondemand.ORDERED
    no = ondemand.consider("no.apps.t1.example")
    assert no.outcome == ondemand.REFUSED and no.reason == "the ask endpoint answered 403"
    slow = ondemand.consider("slow.apps.t1.example")
    assert slow.outcome == ondemand.REFUSED and slow.reason == "the ask endpoint did not answer in time"
    assert _Ask.asked[:2] == ["yes.apps.t1.example", "no.apps.t1.example"]
    assert list(Order.objects.values_list("host", flat=True)) == ["yes.apps.t1.example"]


def test_names_outside_every_on_demand_delegation_cost_no_query(t1, django_assert_num_queries):
    ondemand.reported(["warm.example"])  # loads the suffix cache
    with django_assert_num_queries(0):
        assert ondemand.reported([f"x{i}.elsewhere.example" for i in range(200)] + ["a.plain.t1.example"]) == []
        assert ondemand.reported(["a.apps.t1.example", "b.apps.t1.example"]) == ["a.apps.t1.example",
                                                                                 "b.apps.t1.example"]
        assert ondemand.reported(["a.apps.t1.example"]) == []  # seen a moment ago
        flood = [f"f{i}.apps.t1.example" for i in range(100)]
        assert len(ondemand.reported(flood)) == ondemand.WINDOW_NAMES - 2  # per delegation and window
    assert ondemand.COUNTERS["throttled"] >= 100 - ondemand.WINDOW_NAMES


def test_an_on_demand_certificate_is_the_tenant_s_attached_to_no_route_and_published(t1):
    order = Order.objects.get(pk=ondemand.consider("new.apps.t1.example").order_id)
    chain, key = issue("new.apps.t1.example")
    cert = services.store_certificate(order, chain, key)
    assert cert.tenant_id == t1.pk and cert.source == "acme" and cert.sans == ["new.apps.t1.example"]
    order.refresh_from_db()
    assert order.state == Order.VALID and order.certificate_id == cert.pk and order.renew_at is not None
    assert route_certs() == {"apps": None, "plain": None}
    snap = compile_snapshot()
    assert [c["hosts"] for c in snap["certificates"]] == [["new.apps.t1.example"]]
    state = ondemand.state_of(order.delegation)
    assert (state["used"], state["issued"], state["last_hour"]) == (1, 1, 1)


def route_certs():
    from controlplane.proxy.models import Route
    return dict(Route.objects.values_list("name", "certificate_id"))


def test_on_demand_limits_are_validated(t1):
    d = Delegation.objects.get(suffix="apps.t1.example")
    with pytest.raises(ValidationError):
        proxy_services.update_delegation_on_demand(ACTOR, d, on_demand_max_certificates=-1)
    with pytest.raises(ValidationError):
        proxy_services.update_delegation_on_demand(ACTOR, d, on_demand_max_per_hour="5")


# ------------------------------------------------------------------ node side


class _Route:
    def __init__(self, hosts, tenant):
        self.hosts, self.tenant = hosts, tenant


class _Cert:
    def __init__(self, hosts, tenant):
        self.id, self.name, self.tenant, self.hosts, self.fingerprint = 1, "c", tenant, hosts, ""


def test_the_node_notes_only_tenant_hosts_without_a_certificate_bounded_and_once():
    from dataplane.tls import CertEntry
    table = CertTable([CertEntry(_Cert(["have.apps.t1.example"], "t1"), None)],
                      [_Route(["*.apps.t1.example"], "t1"), _Route(["platform.example"], None)])
    unknown = UnknownSni()
    for name in ["new.apps.t1.example", "have.apps.t1.example", "platform.example", "nobody.example",
                 "new.apps.t1.example"]:
        unknown.note(table, name)
    assert unknown.report(now=100.0) == ["new.apps.t1.example"]
    unknown.note(table, "new.apps.t1.example")
    assert unknown.report(now=110.0) == []  # reported 10 s ago
    unknown.note(table, "new.apps.t1.example")
    assert unknown.report(now=131.0) == ["new.apps.t1.example"]
    for i in range(schema.MAX_UNKNOWN_SNI + 50):
        unknown.note(table, f"n{i}.apps.t1.example")
    assert len(unknown.take()) == schema.MAX_UNKNOWN_SNI and unknown.dropped == 50


def test_the_unknown_sni_message_is_checked():
    msg = {"type": schema.MSG_UNKNOWN_SNI,
           "names": ["ok.example", "OK.example", "ok.example", "bad_name.example", 7, "*.w.example", "x" * 300]}
    assert schema.parse_unknown_sni(msg) == ["ok.example"]
    assert schema.parse_unknown_sni({"names": "ok.example"}) == []
    assert len(schema.parse_unknown_sni({"names": [f"n{i}.example" for i in range(1000)]})) == schema.MAX_UNKNOWN_SNI


def test_backup_and_restore_keep_on_demand_settings_and_orders(t1):
    import json as _json

    from controlplane.configio import backup
    from tests.configio.helpers import empty_installation

    on_demand("apps.t1.example", on_demand_max_certificates=7, on_demand_max_per_hour=3)
    order = Order.objects.get(pk=ondemand.consider("new.apps.t1.example").order_id)
    data = _json.loads(_json.dumps(backup.backup()))
    empty_installation()
    assert not Order.objects.exists()
    backup.restore(data)
    d = Delegation.objects.get(suffix="apps.t1.example")
    assert (d.on_demand_tls, d.on_demand_max_certificates, d.on_demand_max_per_hour) == (True, 7, 3)
    again = Order.objects.get()
    assert (again.pk, again.on_demand, again.host, again.delegation_id, again.via_route_id, again.route_id) == \
        (order.pk, True, "new.apps.t1.example", d.pk, order.via_route_id, None)


def test_deleting_an_on_demand_certificate_frees_its_place_in_the_quota(t1):
    on_demand("apps.t1.example", on_demand_max_certificates=1)
    order = Order.objects.get(pk=ondemand.consider("one.apps.t1.example").order_id)
    cert = services.store_certificate(order, *issue("one.apps.t1.example"))
    assert ondemand.consider("two.apps.t1.example").outcome == ondemand.REFUSED
    proxy_services.delete_certificate(ACTOR, cert)
    assert not Order.objects.exists()
    assert ondemand.consider("two.apps.t1.example").outcome == ondemand.ORDERED


def test_an_order_failing_three_times_is_dropped_and_listed_with_the_ca_s_error(t1, settings):
    from django.utils import timezone

    settings.SWITCHYARD_ALERT_DEBOUNCE_SECONDS = 300
    order = Order.objects.get(pk=ondemand.consider("gone.apps.t1.example").order_id)
    for attempt in range(1, ondemand.MAX_FAILURES + 1):
        services.record_failure(order, "connection refused by 127.0.0.2", timezone.now())
        assert ondemand.after_failure(order) == (attempt == ondemand.MAX_FAILURES)
    assert not Order.objects.exists()
    refusal = OnDemandRefusal.objects.get(name="gone.apps.t1.example")
    assert refusal.reason == "validation failed 3 times: connection refused by 127.0.0.2"
