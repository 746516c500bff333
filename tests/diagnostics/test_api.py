"""/api/v1/diagnostics/: scoping (another tenant's object is a 404), validation, the
breakdown and the chain report. Node round trips are covered by tests/e2e/test_diagnostics.py."""
import datetime as dt

import pytest
import trustme
from django.utils import timezone

from controlplane.diagnostics.explanations import EXPLANATIONS
from controlplane.diagnostics.models import CapturedRequest, CaptureSession
from controlplane.proxy import services as proxy_services
from controlplane.publishing.models import Node
from controlplane.telemetry.models import TrafficMinute
from dataplane import errors, schema
from tests.api.conftest import as_role, client_for, encryption_key, staff_api, world  # noqa: F401
from tests.controlplane.helpers import ACTOR

pytestmark = pytest.mark.django_db
API = "/api/v1/diagnostics"


def test_every_code_the_data_plane_emits_is_explained():
    import pathlib
    import re
    codes = set(errors.ERRORS)
    root = pathlib.Path(__file__).resolve().parents[2] / "dataplane"
    src = "".join((root / f).read_text() for f in ("forwarder.py", "upstream.py", "websocket.py",
                                                     "outlier.py", "balancer.py"))
    codes |= set(re.findall(r'(?:fail|abort_client|close)\("([a-z_]+)"', src))
    codes |= set(re.findall(r'UpstreamError\("([a-z_]+)"', src))
    codes |= {spec[1] for spec in errors.ERRORS.values()}
    missing = codes - set(EXPLANATIONS)
    assert not missing, missing
    for e in EXPLANATIONS.values():
        assert e["meaning"] and e["check"]


def test_another_tenants_objects_are_404_on_every_endpoint(world, as_role):
    a, b = world["a"], world["b"]
    api = as_role("owner")  # alpha's owner
    s = CaptureSession.objects.create(route=b.route, tenant=b.tenant, count=1,
                                      expires=timezone.now() + dt.timedelta(minutes=5))
    target = b.pool.targets.first()
    gets = [f"{API}/routes/{b.route.id}/errors/", f"{API}/routes/{b.route.id}/captures/",
            f"{API}/certificates/{b.certificate.id}/chain/", f"{API}/captures/{s.id.hex}/",
            f"{API}/nodes/{world['node'].id}/", f"{API}/tail/?route={b.route.id}",
            f"{API}/routes/999999/errors/", f"{API}/captures/not-a-uuid/"]
    for url in gets:
        assert api.get(url).status_code == 404, url
    posts = [(f"{API}/routes/{b.route.id}/capture/", {}),
             (f"{API}/routes/{b.route.id}/test-request/", {}),
             (f"{API}/probe/", {"target": target.id}),
             (f"{API}/tls-check/", {"sni": "api.beta.example.com"})]
    for url, body in posts:
        assert api.post(url, body, format="json").status_code == 404, url
    assert api.delete(f"{API}/captures/{s.id.hex}/").status_code == 404
    # own objects are visible
    assert api.get(f"{API}/routes/{a.route.id}/errors/").status_code == 200
    assert api.get(f"{API}/certificates/{a.certificate.id}/chain/").status_code == 200
    # nodes: a tenant sees names and connection only, never status; staff see everything
    listed = api.get(f"{API}/nodes/").json()["results"]
    assert listed == [{"id": world["node"].id, "name": "edge-1", "connected": False}]
    staff = client_for(world["staff"])
    assert staff.get(f"{API}/nodes/{world['node'].id}/").json()["name"] == "edge-1"
    assert staff.get(f"{API}/nodes/edge-1/").status_code == 200
    assert client_for().get(f"{API}/nodes/").status_code in (401, 403)


def test_viewers_may_look_but_not_capture_or_probe(world, as_role):
    a = world["a"]
    viewer = as_role("viewer")
    assert viewer.get(f"{API}/routes/{a.route.id}/errors/").status_code == 200
    assert viewer.post(f"{API}/routes/{a.route.id}/capture/", {}, format="json").status_code == 403
    assert viewer.post(f"{API}/probe/", {"target": a.pool.targets.first().id},
                       format="json").status_code == 403


def test_node_availability_errors(world, as_role, staff_api):
    a = world["a"]
    owner = as_role("owner")
    r = owner.post(f"{API}/probe/", {"target": a.pool.targets.first().id}, format="json")
    assert r.status_code == 503 and r.json()["detail"] == "no data-plane node is connected"
    r = owner.post(f"{API}/probe/", {"target": a.pool.targets.first().id, "node": "edge-1"}, format="json")
    assert r.status_code == 409 and "edge-1 is not connected" in r.json()["detail"]
    assert staff_api.post(f"{API}/tls-check/", {"sni": "a.b.test", "node": "nope"},
                          format="json").status_code == 404


def test_tenant_upstream_policy_applies_to_probes(world, as_role):
    Node.objects.filter(pk=world["node"].pk).update(connected=True)
    owner = as_role("owner")
    r = owner.post(f"{API}/probe/", {"url": "http://127.0.0.1:8080/"}, format="json")
    assert r.status_code == 400
    assert "loopback" in r.json()["url"][0]
    r = owner.post(f"{API}/probe/", {"url": "http://169.254.169.254/latest/"}, format="json")
    assert r.status_code == 400 and "link-local" in r.json()["url"][0]
    assert owner.post(f"{API}/probe/", {"url": "ftp://x/"}, format="json").status_code == 400


def test_route_errors_explains_each_type_with_links_and_latency(world, staff_api):
    a = world["a"]
    now = timezone.now().replace(second=0, microsecond=0)
    lat = [0] * schema.STATS_BUCKET_SLOTS
    up = [0] * schema.STATS_BUCKET_SLOTS
    lat[10] = 10  # <= 2.5 s
    up[10] = 10
    TrafficMinute.objects.create(minute=now, route=a.route, tenant=a.tenant, requests=30,
                                 status_2xx=10, status_5xx=20,
                                 by_proxy_status={"connection_refused": 15, "http_response_timeout": 5},
                                 latency=lat, upstream_latency=up)
    data = staff_api.get(f"{API}/routes/{a.route.id}/errors/?minutes=10").json()
    assert data["requests"] == 30 and data["error_rate"] == pytest.approx(20 / 30, rel=1e-3)
    first = data["errors_by_type"][0]
    assert first["type"] == "connection_refused" and first["count"] == 15 and first["status"] == 502
    assert first["meaning"].startswith("Nothing is listening")
    assert first["links"]["tail"].endswith(f"route={a.route.id}&proxy_status=connection_refused")
    assert first["links"]["probe"][0]["body"] == {"target": a.pool.targets.first().id}
    assert data["errors_by_type"][1]["type"] == "http_response_timeout"
    assert data["latency"]["upstream"]["p95"] is not None
    assert data["latency"]["verdict"].startswith("the backend is slow")
    assert len(data["series"]) == 10
    node_view = staff_api.get(f"{API}/nodes/{world['node'].id}/errors/").json()
    assert node_view["requests"] == 0  # those rows were not this node's


def test_certificate_chain_report_names_the_missing_intermediate(world, staff_api):
    ca = trustme.CA()
    leaf = ca.create_child_ca().issue_cert("chain.alpha.example.com")
    cert = proxy_services.create_certificate(
        ACTOR, tenant=world["a"].tenant, name="no-intermediate",
        certificate_pem=leaf.cert_chain_pems[0].bytes().decode(),
        private_key_pem=leaf.private_key_pem.bytes().decode())
    data = staff_api.get(f"{API}/certificates/{cert.id}/chain/").json()
    assert data["chain_status"] == "incomplete" and data["complete"] is False
    assert "intermediate certificate issued to" in data["missing_intermediate"]
    assert "is missing" in data["missing_intermediate"]


def test_captures_listing_and_tail_filter_validation(world, as_role):
    a = world["a"]
    s = CaptureSession.objects.create(route=a.route, tenant=a.tenant, count=2,
                                      expires=timezone.now() + dt.timedelta(minutes=5))
    CapturedRequest.objects.create(session=s, route=a.route, tenant=a.tenant, data={"status": 200},
                                   expires=timezone.now() + dt.timedelta(hours=1))
    owner = as_role("owner")
    got = owner.get(f"{API}/captures/{s.id.hex}/").json()
    assert got["captured"] == 1 and got["active"] is True and got["requests"][0]["status"] == 200
    assert owner.get(f"{API}/routes/{a.route.id}/captures/").json()["requests"][0]["status"] == 200
    assert owner.get(f"{API}/tail/?status=99x").status_code == 400
    assert owner.get(f"{API}/tail/?client=not-an-ip").status_code == 400


def test_config_check_is_staff_only_and_lists_problems(world, staff_api, as_role):
    assert as_role("owner").get(f"{API}/config/").status_code == 403
    data = staff_api.get(f"{API}/config/?schema_only=1").json()
    assert data["ok"] is True and data["problems"] == []


def test_tail_negotiates_an_eventsource_accept_header(world, as_role):
    """A browser's EventSource sends Accept: text/event-stream; it must not get 406."""
    owner = as_role("owner")
    refused = owner.get(f"{API}/tail/?status=99x", HTTP_ACCEPT="text/event-stream")
    assert refused.status_code == 400 and "status" in refused.content.decode()
    stream = owner.get(f"{API}/tail/?seconds=0.1", HTTP_ACCEPT="text/event-stream")
    assert stream.status_code == 200
    assert stream["Content-Type"].startswith("text/event-stream")
