"""Rate limits in the business layer: normalised and bounded by the node's own schema,
audited and versioned, the tenant's limit compiled for its routes only, checkconfig on
a stored bad limit, "why 4xx" naming the limit, and the shares exchange with its
in-memory store (embedded mode)."""
import asyncio
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from controlplane.audit.models import AuditEntry
from controlplane.proxy import services
from controlplane.proxy.models import Route
from controlplane.publishing import ratelimits
from controlplane.publishing.models import ConfigVersion
from dataplane import applier, schema
from dataplane.ratelimit import FLOOR

from .helpers import ACTOR, route, tenant

pytestmark = pytest.mark.django_db


def test_a_route_limit_is_normalised_versioned_and_audited():
    r = route("app", rate_limit={"rate": 3})
    assert r.rate_limit == {"rate": 3.0, "burst": 3, "key": "none", "header": ""}
    [entry] = ConfigVersion.objects.latest("number").snapshot["routes"]
    assert entry["rate_limit"] == r.rate_limit
    applier.check_snapshot(ConfigVersion.objects.latest("number").snapshot)  # the gate accepts it
    services.update_route(ACTOR, r, rate_limit={"rate": 1.5, "burst": 4, "key": "client_ip"}, note="slower")
    audit = AuditEntry.objects.filter(object_type="route", note="slower").get()
    assert audit.before["rate_limit"]["rate"] == 3.0 and audit.after["rate_limit"]["rate"] == 1.5
    with pytest.raises(ValidationError) as exc:
        services.update_route(ACTOR, r, rate_limit={"rate": 2_000_000})
    assert "rate_limit" in exc.value.message_dict


def test_a_tenants_limit_reaches_the_snapshot_only_with_its_routes():
    shop = tenant("shop")
    services.update_tenant(ACTOR, shop, rate_limit={"rate": 10, "key": "header", "header": "X-Api-Key"})
    assert "tenant_rate_limits" not in ConfigVersion.objects.latest("number").snapshot
    route("api", shop)
    snap = ConfigVersion.objects.latest("number").snapshot
    assert snap["tenant_rate_limits"] == [{"tenant": "shop", "limit": {
        "rate": 10.0, "burst": 10, "key": "header", "header": "X-Api-Key"}}]
    parsed = schema.parse_snapshot(snap)
    assert parsed.tenant_rate_limits[0].limit.header == "x-api-key"


def test_checkconfig_names_a_stored_bad_limit():
    r = route("app", rate_limit={"rate": 3})
    Route.objects.filter(pk=r.pk).update(rate_limit={"rate": 3, "burst": 0, "key": "none", "header": ""})
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("checkconfig", "--schema-only", stdout=out)
    assert "routes[0].rate_limit.burst" in out.getvalue()


def test_why_4xx_names_the_rate_limit():
    from controlplane.diagnostics.services.errors import explained_errors

    shop = tenant("shop")
    services.update_tenant(ACTOR, shop, rate_limit={"rate": 100})
    r = route("app", shop, rate_limit={"rate": 5, "key": "client_ip"})
    summary = {"errors_by_type": [{"type": "http_request_denied", "count": 9, "status": 429}]}
    [denied] = explained_errors(summary, r)
    assert denied["policy"]["rate_limit"]["rate"] == 5.0
    assert "5 requests/s, burst 5, per client address" in denied["check"]
    assert "tenant shop" in denied["check"] and "rate limit" in denied["check"]


def test_shares_come_from_every_nodes_report_in_the_store(settings):
    settings.REDIS_URL = ""
    ratelimits._store = None  # embedded mode: the process's memory

    async def exchange():
        a, b = ratelimits.NodeShares(1), ratelimits.NodeShares(2)
        nodes = lambda: asyncio.sleep(0, 2)  # noqa: E731 - the connected-node count, unused here
        report = {"type": schema.MSG_RATELIMIT_REPORT}
        await a.answer({**report, "limits": {"r:1": {"demand": 30}}}, nodes)
        answer_b = await b.answer({**report, "limits": {"r:1": {"demand": 10}}}, nodes)
        answer_a = await a.answer({**report, "limits": {"r:1": {"demand": 30}}}, nodes)
        return answer_a, answer_b

    answer_a, answer_b = asyncio.run(exchange())
    assert answer_a["nodes"] == answer_b["nodes"] == 2 and not answer_a["fallback"]
    assert answer_a["limits"]["r:1"]["share"] == pytest.approx(FLOOR / 2 + (1 - FLOOR) * 0.75, abs=1e-5)
    assert answer_b["limits"]["r:1"]["share"] == pytest.approx(FLOOR / 2 + (1 - FLOOR) * 0.25, abs=1e-5)
    with pytest.raises(schema.RateLimitMessageInvalid):
        asyncio.run(ratelimits.NodeShares(3).answer({"type": "ratelimit.report", "limits": []}, None))
    ratelimits._store = None
