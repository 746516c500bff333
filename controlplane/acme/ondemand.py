"""On-demand TLS: a certificate for a new name below a delegated suffix, ordered when a
node first sees a TLS handshake for it (in the spirit of Caddy's on-demand TLS).

Two steps, so that what a hostile client can send costs little:

1. ``reported(names)`` runs where a node's ``tls.unknown_sni`` message arrives (the sync
   consumer, through ``publishing.sni``). No query per name: the suffixes of the
   delegations with on-demand issuance on are cached for ``SUFFIX_CACHE_SECONDS``; a name
   below none of them is only counted (``COUNTERS``). A name seen in the last
   ``SEEN_SECONDS`` is dropped, and at most ``WINDOW_NAMES`` names per delegation per
   ``WINDOW_SECONDS`` go on, queued as one Celery task (``tasks.report_unknown_sni``).
2. ``consider(name)`` (the task) decides with the database: the name must lie below an
   on-demand delegation, be served by an enabled route of that delegation's tenant, have
   no certificate of that tenant and no order yet, be within the delegation's limits
   (``on_demand_max_certificates`` orders in all, ``on_demand_max_per_hour`` new orders
   per hour) and pass the platform's ask check (``SWITCHYARD_ACME_ON_DEMAND_ASK``: a GET
   of ``<ask>?domain=<name>``; only a 2xx allows it, anything else, a timeout included,
   refuses). Then an on-demand ``Order`` is made (its challenge and profile are the
   serving route's choice, HTTP-01 by default) and queued; the existing issuance path
   orders, publishes the challenges, stores the certificate (``source: acme``, the
   tenant's, hosts = [name]), publishes it, and renews it like any order.

Refusals of names below an on-demand delegation are kept (the last ``KEEP_REFUSALS`` per
delegation, one row per name) and shown on the tenant page and in the API.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass

import requests
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from controlplane.proxy import acme_choice
from controlplane.proxy.models import Certificate, Route
from controlplane.tenancy.models import Delegation
from dataplane import schema

from . import services
from .models import OnDemandRefusal, Order

log = logging.getLogger(__name__)

SUFFIX_CACHE_SECONDS = 5.0
SEEN_SECONDS = 60.0
MAX_SEEN = 10000
WINDOW_SECONDS = 10.0
WINDOW_NAMES = 32
KEEP_REFUSALS = 20
HOUR = dt.timedelta(hours=1)

# What step 1 dropped, per process: names below no on-demand delegation, repeats, throttled.
COUNTERS = {"reported": 0, "outside": 0, "repeated": 0, "throttled": 0, "forwarded": 0}

ORDERED, IGNORED, REFUSED = "ordered", "ignored", "refused"


@dataclass(frozen=True)
class Decision:
    outcome: str  # ORDERED, IGNORED or REFUSED
    reason: str = ""
    order_id: int | None = None


# ------------------------------------------------------------------ step 1: triage

class _Triage:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.suffixes: dict[str, int] = {}
        self.loaded = float("-inf")
        self.seen: dict[str, float] = {}
        self.windows: dict[int, tuple[float, int]] = {}

    def reset(self) -> None:
        with self.lock:
            self.__init__()


TRIAGE = _Triage()


def _on_demand_suffixes(now: float) -> dict[str, int]:
    if now - TRIAGE.loaded >= SUFFIX_CACHE_SECONDS:
        TRIAGE.suffixes = dict(Delegation.objects.filter(on_demand_tls=True).values_list("suffix", "id"))
        TRIAGE.loaded = now
    return TRIAGE.suffixes


def delegation_suffix(name: str, suffixes) -> str | None:
    """The longest suffix in ``suffixes`` covering ``name`` (itself or a parent), or None."""
    candidate = name
    while True:
        if candidate in suffixes:
            return candidate
        i = candidate.find(".")
        if i < 0:
            return None
        candidate = candidate[i + 1:]


def reported(names: list[str]) -> list[str]:
    """Names a node reported (validated by ``schema.parse_unknown_sni``): the ones worth
    a decision (``tasks.report_unknown_sni`` queues them)."""
    if not names or not services.enabled():
        return []
    now = time.monotonic()
    forward: list[str] = []
    with TRIAGE.lock:
        COUNTERS["reported"] += len(names)
        suffixes = _on_demand_suffixes(now)
        seen = TRIAGE.seen
        if len(seen) > MAX_SEEN:
            TRIAGE.seen = seen = {k: at for k, at in seen.items() if now - at < SEEN_SECONDS}
            if len(seen) > MAX_SEEN:
                seen.clear()
        for name in names[:schema.MAX_UNKNOWN_SNI]:
            suffix = delegation_suffix(name, suffixes) if suffixes else None
            if suffix is None:
                COUNTERS["outside"] += 1
                continue
            at = seen.get(name)
            if at is not None and now - at < SEEN_SECONDS:
                COUNTERS["repeated"] += 1
                continue
            delegation_id = suffixes[suffix]
            start, count = TRIAGE.windows.get(delegation_id, (now, 0))
            if now - start >= WINDOW_SECONDS:
                start, count = now, 0
            if count >= WINDOW_NAMES:
                COUNTERS["throttled"] += 1
                continue
            TRIAGE.windows[delegation_id] = (start, count + 1)
            seen[name] = now
            forward.append(name)
        COUNTERS["forwarded"] += len(forward)
    return forward


# ------------------------------------------------------------------ step 2: decision

def _delegation_for(name: str) -> Delegation | None:
    parts = name.split(".")
    candidates = [".".join(parts[i:]) for i in range(len(parts) - 1)]
    rows = {d.suffix: d for d in Delegation.objects.filter(suffix__in=candidates).select_related("tenant")}
    suffix = delegation_suffix(name, rows)
    return rows[suffix] if suffix else None


def serving_route(tenant_id: int, name: str) -> Route | None:
    """The enabled route of the tenant that a request for ``name`` would reach first, as
    the node's router matches hosts: an exact host, else the longest wildcard suffix."""
    best, best_len = None, -1
    for route in Route.objects.filter(tenant_id=tenant_id, enabled=True).order_by("id"):
        for host in route.hosts or []:
            if not isinstance(host, str):
                continue
            host = host.lower()
            if host == name:
                return route
            if host.startswith("*.") and name.endswith(host[1:]) and len(host) > best_len:
                best, best_len = route, len(host)
    return best


def _has_certificate(tenant_id: int, name: str) -> bool:
    parent = "*." + name.split(".", 1)[1]
    return any(name in (sans or []) or parent in (sans or [])
               for sans in Certificate.objects.filter(tenant_id=tenant_id).values_list("sans", flat=True))


def refuse(delegation: Delegation, name: str, reason: str, now: dt.datetime | None = None) -> Decision:
    """Keep the refusal (one row per name, the newest KEEP_REFUSALS per delegation)."""
    now = now or timezone.now()
    updated = OnDemandRefusal.objects.filter(delegation=delegation, name=name).update(
        reason=reason[:300], last=now, count=F("count") + 1)
    if not updated:
        try:
            with transaction.atomic():
                OnDemandRefusal.objects.create(delegation=delegation, name=name, reason=reason[:300], last=now)
        except IntegrityError:  # another worker recorded the same name meanwhile
            pass
        stale = list(OnDemandRefusal.objects.filter(delegation=delegation).order_by("-last", "-id")
                     .values_list("id", flat=True)[KEEP_REFUSALS:])
        if stale:
            OnDemandRefusal.objects.filter(id__in=stale).delete()
    log.info("on-demand TLS: %s not ordered: %s", name, reason)
    return Decision(REFUSED, reason)


def _limits(delegation: Delegation, now: dt.datetime) -> str:
    """Why the delegation's limits refuse one more order ("" when they allow it)."""
    orders = Order.objects.filter(on_demand=True, delegation=delegation)
    used = orders.count()
    if used >= delegation.on_demand_max_certificates:
        return (f"quota: {used} of {delegation.on_demand_max_certificates} on-demand certificates "
                f"below {delegation.suffix} used")
    recent = orders.filter(requested__gte=now - HOUR).count()
    if recent >= delegation.on_demand_max_per_hour:
        return (f"rate limit: {recent} of {delegation.on_demand_max_per_hour} new on-demand orders "
                f"below {delegation.suffix} in the last hour")
    return ""


def ask(name: str) -> str:
    """The platform's ask check: "" when ``SWITCHYARD_ACME_ON_DEMAND_ASK`` is unset or
    answers 2xx, else why it refuses."""
    url = settings.SWITCHYARD_ACME_ON_DEMAND_ASK
    if not url:
        return ""
    try:
        resp = requests.get(url, params={"domain": name}, allow_redirects=False,
                            timeout=settings.SWITCHYARD_ACME_ON_DEMAND_ASK_TIMEOUT)
    except requests.Timeout:
        return "the ask endpoint did not answer in time"
    except requests.RequestException as exc:
        return f"the ask endpoint could not be reached: {type(exc).__name__}"
    status = resp.status_code
    resp.close()
    return "" if 200 <= status < 300 else f"the ask endpoint answered {status}"


def consider(name: str, now: dt.datetime | None = None) -> Decision:
    """Order a certificate for ``name`` when everything allows it (module docstring); the
    caller queues an ORDERED decision's order (``tasks.on_demand``)."""
    now = now or timezone.now()
    if not services.enabled() or not schema.SNI_NAME.fullmatch(name):
        return Decision(IGNORED, "not a name on-demand issuance serves")
    delegation = _delegation_for(name)
    if delegation is None or not delegation.on_demand_tls:
        return Decision(IGNORED, "below no delegation with on-demand issuance")
    route = serving_route(delegation.tenant_id, name)
    if route is None:
        return refuse(delegation, name, f"no enabled route of tenant {delegation.tenant.slug} serves it", now)
    if route.acme and name in (route.hosts or []):
        return Decision(IGNORED, f"route {route.name} orders its own certificate")
    if Order.objects.filter(on_demand=True, host=name).exists():
        return Decision(IGNORED, "an order for it exists")
    if _has_certificate(delegation.tenant_id, name):
        return Decision(IGNORED, "the tenant has a certificate for it")
    why = _limits(delegation, now)
    if why:
        return refuse(delegation, name, why, now)
    why = ask(name)
    if why:
        return refuse(delegation, name, why, now)
    with transaction.atomic():
        delegation = Delegation.objects.select_for_update().get(pk=delegation.pk)  # one decision at a time
        if not delegation.on_demand_tls:
            return Decision(IGNORED, "on-demand issuance was switched off")
        why = _limits(delegation, now)
        if why:
            return refuse(delegation, name, why, now)
        if Order.objects.filter(on_demand=True, host=name).exists():
            return Decision(IGNORED, "an order for it exists")
        order = Order.objects.create(
            on_demand=True, delegation=delegation, via_route=route, host=name, names=[name], requested=now,
            challenge=acme_choice.method([name], route.acme_challenge), profile=acme_choice.profile(route.acme_profile),
            state=Order.PENDING)
        OnDemandRefusal.objects.filter(delegation=delegation, name=name).delete()
    log.info("on-demand TLS: ordering a certificate for %s (tenant %s)", name, delegation.tenant.slug)
    return Decision(ORDERED, order_id=order.pk)


MAX_FAILURES = 3


def after_failure(order: Order) -> bool:
    """An on-demand order that never got a certificate and failed ``MAX_FAILURES`` times in
    a row is dropped (freeing its place in the quota, no more retries against the CA) and
    the name is listed as refused with the CA's error; True when dropped."""
    order.refresh_from_db(fields=["failures", "error", "certificate"])
    if order.certificate_id is not None or order.failures < MAX_FAILURES:
        return False
    delegation = Delegation.objects.get(pk=order.delegation_id)
    refuse(delegation, order.host, f"validation failed {order.failures} times: {order.error}")
    order.delete()
    return True


# ------------------------------------------------------------------ what the pages show

def state_of(delegation: Delegation, now: dt.datetime | None = None) -> dict:
    """The delegation's on-demand state: switch, limits, use, the last refusals."""
    now = now or timezone.now()
    orders = Order.objects.filter(on_demand=True, delegation=delegation)
    return {
        "enabled": delegation.on_demand_tls,
        "max_certificates": delegation.on_demand_max_certificates,
        "max_per_hour": delegation.on_demand_max_per_hour,
        "used": orders.count(),
        "last_hour": orders.filter(requested__gte=now - HOUR).count(),
        "issued": orders.filter(state=Order.VALID).count(),
        "failed": orders.filter(state=Order.FAILED).count(),
        "refusals": [{"name": r.name, "reason": r.reason, "count": r.count, "last": r.last}
                     for r in delegation.on_demand_refusals.all()[:KEEP_REFUSALS]],
    }
