"""One attempt at an order, from the CA's order to the certificate on the route, and the
renewal-information check of issued certificates."""
from __future__ import annotations

import datetime as dt
import logging

from cryptography import x509
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from . import ari, client, dns01, ondemand, services
from .models import Order

log = logging.getLogger(__name__)
OK, FAILED, SKIPPED = "valid", "failed", "skipped"


def run(order_id: int, now: dt.datetime | None = None) -> str:
    """Work on the order when it is due and free: VALID, FAILED or SKIPPED."""
    order = services.claim(order_id, now or timezone.now())
    if order is None:
        return SKIPPED
    try:
        chain_pem, key_pem = _obtain(order)
        services.store_certificate(order, chain_pem, key_pem)
        return OK
    except client.AcmeFailure as exc:
        services.record_failure(order, str(exc), timezone.now())
    except ValidationError as exc:
        services.record_failure(order, f"the issued certificate was refused: {_messages(exc)}", timezone.now())
    except Exception as exc:  # an unexpected error still leaves an honest state behind
        log.exception("ACME order %s failed", order.pk)
        services.record_failure(order, f"internal error: {exc}", timezone.now())
    finally:
        services.release(order)
    if order.on_demand:
        ondemand.after_failure(order)
    return FAILED


def _messages(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
    return " ".join(exc.messages)


def _obtain(order: Order) -> tuple[str, str]:
    """Order (the route's profile; ARI ``replaces`` on a renewal), publish the challenges of
    the route's method (to every node and wait for their ACK, or to the DNS server and wait
    until it answers them), validate; (chain PEM, key PEM)."""
    method = services.order_method(order)
    acme = services.account_client(client.configured())
    key_pem = client.new_private_key()
    ca_order = acme.new_order(order.names, key_pem, profile=services.order_profile(order) or "",
                              replaces=_replaces(order))
    pending = acme.challenges(ca_order, method)
    if method == client.DNS_01:
        return _obtain_dns01(acme, ca_order, pending), key_pem
    if pending:
        version = services.publish_challenges(order, pending)
        services.wait_for_nodes(version, settings.SWITCHYARD_ACME_PROPAGATION_SECONDS)
    return acme.validate_and_finish(ca_order, pending, settings.SWITCHYARD_ACME_VALIDATION_SECONDS), key_pem


def _replaces(order: Order) -> str:
    """The ARI certID of the certificate a renewal replaces ("" for a first order)."""
    cert = order.certificate if order.certificate_id else None
    if cert is None or not cert.certificate_pem:
        return ""
    try:
        return ari.cert_id(cert.certificate_pem)
    except (ValueError, x509.ExtensionNotFound):  # no authority key identifier: no replaces
        return ""


def _obtain_dns01(acme: client.AcmeClient, ca_order, pending: list[client.Http01]) -> str:
    config = dns01.configured()
    if config is None:
        raise client.AcmeFailure("DNS-01 needs SWITCHYARD_ACME_DNS_SERVER and SWITCHYARD_ACME_DNS_ZONE")
    # A wildcard's authorization names its base: both validate at _acme-challenge.<base>.
    records = [(dns01.record_name(c.host, config.zone), c.dns_value) for c in pending]
    if records:
        dns01.add(config, records)
    try:
        if records:
            dns01.wait_visible(config, records, settings.SWITCHYARD_ACME_PROPAGATION_SECONDS)
        return acme.validate_and_finish(ca_order, pending, settings.SWITCHYARD_ACME_VALIDATION_SECONDS)
    finally:
        if records:
            try:
                dns01.remove(config, records)
            except client.AcmeFailure as exc:  # the certificate is issued: a stale TXT record is harmless
                log.warning("%s", exc)


def refresh_renewal_info(now: dt.datetime | None = None) -> int:
    """Ask the CA's renewal information for every issued certificate whose check is due and
    move its renewal time into the suggested window; returns how many were asked."""
    now = now or timezone.now()
    orders = [o for o in Order.objects.filter(services.RENEWED, certificate__isnull=False)
              .select_related("certificate") if _ari_due(o, now)]
    if not orders:
        return 0
    config = client.configured()
    url = services.account_client(config).renewal_info_url
    for order in orders:
        _apply_renewal_info(order, url, config.verify, now)
    return len(orders)


def _ari_due(order: Order, now: dt.datetime) -> bool:
    cert = order.certificate
    return cert.not_after is not None and cert.not_after > now and (
        order.ari_next_check is None or order.ari_next_check <= now)


def _apply_renewal_info(order: Order, url: str, verify, now: dt.datetime) -> None:
    if not url:  # the CA has none: the lifetime rule stands; look again later
        order.ari_next_check = now + ari.MAX_RETRY
        order.save(update_fields=["ari_next_check", "updated"])
        return
    try:
        info = ari.fetch(url, order.certificate.certificate_pem, now=now, verify=verify)
    except ari.AriError as exc:
        log.info("renewal information of %s: %s", order.names, exc)
        order.ari_next_check = exc.retry_at
        order.save(update_fields=["ari_next_check", "updated"])
        return
    order.renew_at, order.ari_next_check = info.pick_time(), info.retry_at
    order.ari_explanation = info.explanation_url[:500]
    order.save(update_fields=["renew_at", "ari_next_check", "ari_explanation", "updated"])
