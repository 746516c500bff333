"""The database side of automatic certificates: orders follow the routes that ask for
one, names are claimed one order at a time, challenges are published to the nodes with
the config, and an issued certificate is stored and attached through the same service
layer as an uploaded one (validated, key encrypted, published, audited)."""
from __future__ import annotations

import datetime as dt
import logging
import time

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.alerts import hooks
from controlplane.audit.services import Actor
from controlplane import crypto
from controlplane.certs.services import trusted_bundle
from controlplane.proxy import acme_choice
from controlplane.proxy import services as proxy_services
from controlplane.proxy.models import Certificate, Route
from controlplane.publishing import publisher
from controlplane.publishing.models import Node

from . import state
from .client import AcmeClient, AcmeFailure, AcmeSettings, Http01, new_private_key
from .models import Account, Challenge, NameClaim, Order

log = logging.getLogger(__name__)
NODE_POLL_SECONDS = 0.1


def enabled() -> bool:
    return bool(settings.SWITCHYARD_ACME_DIRECTORY)


def challenges_section() -> dict | None:
    """The snapshot's ``acme_challenges``: every pending HTTP-01 and TLS-ALPN-01 challenge,
    or None. A TLS-ALPN-01 entry carries its throwaway validation certificate; its key is
    added just before a push (``fill_challenge_keys``), as certificates' keys are."""
    rows = list(Challenge.objects.order_by("id"))
    if not rows:
        return None
    section = {"http01": [{"token": c.token, "key_authorization": c.key_authorization}
                          for c in rows if c.method == acme_choice.HTTP_01]}
    alpn = [{"host": c.host, "certificate_pem": c.certificate_pem}
            for c in rows if c.method == acme_choice.TLS_ALPN_01]
    if alpn:
        section["tls_alpn01"] = alpn
    return section


def fill_challenge_keys(snapshot: dict) -> None:
    """``compiler.materialize``: each TLS-ALPN-01 entry of ``snapshot`` (a copy about to be
    pushed) gets its validation key, decrypted; "" for a challenge withdrawn since (the
    node then does not answer it)."""
    entries = (snapshot.get("acme_challenges") or {}).get("tls_alpn01") if isinstance(
        snapshot.get("acme_challenges"), dict) else None
    if not entries:
        return
    keys = dict(Challenge.objects.filter(method=acme_choice.TLS_ALPN_01).values_list(
        "certificate_pem", "private_key_encrypted"))
    for entry in entries:
        if isinstance(entry, dict):
            encrypted = keys.get(entry.get("certificate_pem"))
            entry["private_key_pem"] = crypto.decrypt(encrypted) if encrypted else ""


def method_for(route: Route) -> str:
    """The challenge this route's orders use (see ``proxy.acme_choice``)."""
    return acme_choice.method(route.hosts, route.acme_challenge)


def profile_for(route: Route) -> str:
    return acme_choice.profile(route.acme_profile)


def order_method(order: Order) -> str:
    """The challenge of an order: an on-demand order keeps what it was made with."""
    if order.on_demand:
        return order.challenge or acme_choice.default_method()
    return method_for(order.route)


def order_profile(order: Order) -> str:
    return order.profile if order.on_demand else profile_for(order.route)


# ------------------------------------------------------------------ orders follow routes

def sync_route(route: Route) -> Order | None:
    """Make the route's order match what it asks for; returns the order when it needs a
    worker now (new, or its names changed)."""
    order = Order.objects.filter(route_id=route.pk).first()
    if not route.acme or not enabled():
        if order is not None and not route.acme:
            order.delete()
        return None
    names = sorted(route.hosts or [])
    asked = (method_for(route), profile_for(route))
    if order is not None and order.names == names:
        if (order.challenge, order.profile) == asked:
            return None
        order.challenge, order.profile = asked
        if order.state == Order.VALID:  # the issued certificate stands; the next renewal uses them
            order.save(update_fields=["challenge", "profile", "updated"])
            return None
    order = order or Order(route=route)
    order.names, order.state, order.error, order.failures, order.next_retry = names, Order.PENDING, "", 0, None
    order.challenge, order.profile = asked
    order.save()
    return order


# The orders that are worked on and renewed: a route's that still asks, an on-demand one
# while its delegation keeps on-demand issuance on.
RENEWED = Q(route__acme=True) | Q(on_demand=True, delegation__on_demand_tls=True)


def due_orders(now: dt.datetime) -> list[int]:
    orders = Order.objects.filter(RENEWED).only("id", "state", "started", "next_retry", "renew_at")
    return [o.pk for o in orders if state.is_due(o.state, now=now, started=o.started,
                                                 next_retry=o.next_retry, renew_at=o.renew_at)]


def claim(order_id: int, now: dt.datetime) -> Order | None:
    """Take the order for this worker when it is due and no other order holds one of its
    names; None otherwise. The claim rows (unique per name) are committed at once."""
    with transaction.atomic():
        order = Order.objects.select_for_update(of=("self",)).select_related(
            "route", "route__tenant", "delegation", "delegation__tenant").filter(pk=order_id).first()
        if order is None or not state.is_due(order.state, now=now, started=order.started,
                                             next_retry=order.next_retry, renew_at=order.renew_at):
            return None
        NameClaim.objects.filter(name__in=order.names, claimed__lt=now - state.STALE_ATTEMPT).delete()
        try:
            with transaction.atomic():
                NameClaim.objects.bulk_create([NameClaim(name=n, order=order, claimed=now) for n in order.names])
        except IntegrityError:
            log.info("ACME order %s waits: another order holds one of %s", order.pk, order.names)
            return None
        order.started = now
        order.save(update_fields=["started", "updated"])
    return order


def release(order: Order) -> None:
    NameClaim.objects.filter(order_id=order.pk).delete()


# ------------------------------------------------------------------ account

def account_client(config: AcmeSettings) -> AcmeClient:
    """A client with this directory's account, registered once; its key is stored encrypted."""
    account = Account.objects.filter(directory=config.directory).first()
    if account is not None:
        return AcmeClient(config, crypto.decrypt(account.key_encrypted), account.uri)
    key = new_private_key()
    acme = AcmeClient(config, key)
    uri = acme.register()
    try:
        with transaction.atomic():
            Account.objects.create(directory=config.directory, key_encrypted=crypto.encrypt(key), uri=uri,
                                   email=config.email)
    except IntegrityError:  # another worker registered first: use its account
        return account_client(config)
    return acme


# ------------------------------------------------------------------ challenges

def publish_challenges(order: Order, pending: list[Http01]) -> int:
    """Store the challenges and publish them; returns the config version that carries them."""
    with transaction.atomic():
        publisher.lock()
        Challenge.objects.filter(order=order).delete()
        Challenge.objects.bulk_create([Challenge(order=order, host=c.host, token=c.token, method=c.method,
                                                 key_authorization=c.key_authorization,
                                                 certificate_pem=c.certificate_pem,
                                                 private_key_encrypted=crypto.encrypt(c.private_key_pem)
                                                 if c.private_key_pem else "") for c in pending])
        publisher.publish(Actor.system(), f"ACME challenges for {', '.join(order.names)}")
        return publisher.current_version().number


def wait_for_nodes(version: int, timeout: float) -> None:
    """Until every connected node has applied ``version`` (or a later one)."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = Node.objects.filter(revoked=False, connected=True)
        if not nodes.exists():
            raise AcmeFailure("no data-plane node is connected to answer the challenge")
        behind = list(nodes.exclude(applied_version__gte=version).values_list("name", flat=True))
        if not behind:
            return
        if time.monotonic() >= deadline:
            raise AcmeFailure(f"node(s) {', '.join(behind)} did not apply config version {version} "
                              f"(the challenge) within {timeout:g} s")
        time.sleep(NODE_POLL_SECONDS)


# ------------------------------------------------------------------ outcomes

def store_certificate(order: Order, chain_pem: str, key_pem: str) -> Certificate:
    """Store (or renew in place) the route's ACME certificate, attach it, drop the
    challenges and publish; the order becomes valid."""
    actor, note = Actor.system(), f"ACME certificate for {', '.join(order.names)}"
    with transaction.atomic():
        publisher.lock()
        Challenge.objects.filter(order=order).delete()
        # An on-demand certificate is the delegation's tenant's, attached to no route: the
        # node's SNI table picks it by its exact host.
        route = None if order.on_demand else Route.objects.select_related("tenant").get(pk=order.route_id)
        tenant = order.delegation.tenant if order.on_demand else route.tenant
        name = f"acme-{order.host}" if order.on_demand else f"acme-{route.name}"
        cert = Certificate.objects.filter(pk=order.certificate_id, source=Certificate.ACME).first()
        fields = {"certificate_pem": chain_pem, "private_key_pem": key_pem, "ca_bundle_pem": trusted_bundle(),
                  "note": note}
        if cert is None:
            cert = proxy_services.create_certificate(actor, tenant=tenant, name=name[:200],
                                                     source=Certificate.ACME, **fields)
        else:
            cert = proxy_services.update_certificate(actor, cert, **fields)
        if route is not None and route.certificate_id != cert.pk:
            proxy_services.update_route(actor, route, certificate=cert.pk, note=note)
        order.state, order.error, order.failures, order.next_retry = Order.VALID, "", 0, None
        order.started, order.certificate = None, cert
        order.renew_at = state.renewal_time(cert.not_before, cert.not_after)
        order.ari_next_check = None
        order.save()
    return cert


def record_failure(order: Order, error: str, now: dt.datetime) -> None:
    """The order failed: keep the CA's error, back off, drop its challenges, alert."""
    with transaction.atomic():
        publisher.lock()
        had_challenges = Challenge.objects.filter(order=order).delete()[0] > 0
        order.refresh_from_db(fields=["failures"])
        order.failures += 1
        order.state, order.error, order.started = Order.FAILED, error[:2000], None
        order.next_retry = now + state.backoff(order.failures, settings.SWITCHYARD_ACME_RETRY_BASE_SECONDS)
        order.save()
        if had_challenges:
            publisher.publish(Actor.system(), f"ACME challenges for {', '.join(order.names)} withdrawn")
        if order.on_demand:
            tenant, what = order.delegation.tenant, f"{order.host} (on demand, below {order.delegation.suffix})"
            dedup_key = f"acme:on-demand:{order.pk}"
        else:
            route = order.route
            tenant, what = route.tenant if route.tenant_id else None, f"{', '.join(order.names)} (route {route.name})"
            dedup_key = f"acme:route:{route.pk}"
        hooks.acme_failed(tenant=tenant, name=what,
                          error=f"{error} Next attempt: {order.next_retry:%Y-%m-%d %H:%M:%S} UTC.",
                          dedup_key=dedup_key)


OFF = "off"


def status(route: Route) -> dict | None:
    """What the route page and the API show: the order's real state; ``off`` for a route
    that no longer asks but keeps its ACME certificate (attached, not renewed); or None."""
    if not route.acme:
        cert = Certificate.objects.filter(pk=route.certificate_id, source=Certificate.ACME).first() \
            if route.certificate_id else None
        if cert is None:
            return None
        return {"state": OFF, "names": list(cert.sans or []), "error": None, "next_retry": None, "renew_at": None,
                "certificate": cert.pk, "not_after": cert.not_after, "in_progress": False,
                "challenge": None, "profile": None}
    order = Order.objects.filter(route_id=route.pk).select_related("certificate").first()
    if order is None:
        return None
    return {"state": order.state, "names": order.names, "error": order.error or None,
            "next_retry": order.next_retry if order.state == Order.FAILED else None,
            "renew_at": order.renew_at if order.certificate_id else None,
            "certificate": order.certificate_id,
            "not_after": order.certificate.not_after if order.certificate_id else None,
            "in_progress": state.in_progress(order.started, timezone.now()),
            "challenge": method_for(route), "profile": profile_for(route) or None}
