"""Uploading and replacing certificates.

A thin layer over ``controlplane.proxy.services.create_certificate`` /
``update_certificate`` (validate → store → publish → audit, atomically) that adds
what an upload needs on top:

- the operator's CA bundle (``SWITCHYARD_CA_BUNDLE``, a PEM file path) joins the
  caller's ``ca_bundle_pem`` as trusted roots for the chain check;
- a missing private key is refused as ``private_key_pem: This field is required.``;
- PEM text is normalised (CRLF, surrounding blank lines);
- the expiry scan of the certificate runs once the transaction commits, so an upload
  close to expiry alerts at once. (That is done for every save of a Certificate, by
  the post_save handler in ``controlplane.certs.tasks``: admin, API and ACME too.)

Checks come from ``controlplane.proxy.validation.validate_certificate`` (PEM, key
match, chain order and trust, expiry, RSA size, the hosts of the routes that use the
certificate, the tenant's quota). Errors raise ``ValidationError`` keyed by
``certificate_pem`` / ``private_key_pem`` (or ``name``, ``tenant``); warnings and
``chain_status`` are stored on the certificate; the key is stored encrypted
(``controlplane.crypto``) and never returned.
"""
from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError

from controlplane.proxy import services as proxy_services
from controlplane.proxy.models import Certificate
from controlplane.proxy.validation import REQUIRED

log = logging.getLogger(__name__)


def operator_ca_bundle() -> str:
    """The PEM text of ``SWITCHYARD_CA_BUNDLE`` (extra trusted roots), or ""."""
    path = getattr(settings, "SWITCHYARD_CA_BUNDLE", "")
    if not path:
        return ""
    try:
        return Path(path).read_text()
    except (OSError, UnicodeError) as exc:
        log.warning("SWITCHYARD_CA_BUNDLE %s cannot be read: %s", path, exc)
        return ""


def trusted_bundle(extra: str = "") -> str:
    """The operator's bundle plus ``extra``, as one PEM text."""
    return "\n".join(part.strip() for part in (operator_ca_bundle(), extra or "") if part and part.strip())


def _normalize_pem(text) -> str:
    if not isinstance(text, str):
        return ""
    text = text.replace("\r\n", "\n").strip()
    return text + "\n" if text else ""


def _require_key(private_key_pem) -> str:
    key = _normalize_pem(private_key_pem)
    if not key:
        raise ValidationError({"private_key_pem": [REQUIRED]})
    return key


def upload_certificate(actor, *, tenant=None, name: str, certificate_pem: str, private_key_pem: str,
                       ca_bundle_pem: str = "", note: str = "", source: str = Certificate.UPLOADED) -> Certificate:
    """Check and store a new certificate, publish, audit; returns it. Raises ValidationError.
    ``actor``: a ``controlplane.audit.services.Actor`` (None: the system). ``source``: where
    it came from (a configuration file restores an ACME certificate as ``acme``)."""
    key = _require_key(private_key_pem)
    return proxy_services.create_certificate(
        actor, tenant=tenant, name=(name or "").strip(), certificate_pem=_normalize_pem(certificate_pem),
        source=source, private_key_pem=key, ca_bundle_pem=trusted_bundle(ca_bundle_pem), note=note)


def replace_certificate(actor, cert: Certificate, *, certificate_pem: str, private_key_pem: str | None = None,
                        name: str | None = None, ca_bundle_pem: str = "", note: str = "") -> Certificate:
    """Renew ``cert`` in place: the routes that use it keep using it, and the new
    certificate must still cover all their hosts. ``private_key_pem`` None keeps the
    stored key, which must then match the new certificate."""
    key = None if private_key_pem is None else _require_key(private_key_pem)
    fields = {"certificate_pem": _normalize_pem(certificate_pem)}
    if name is not None:
        fields["name"] = name.strip()
    try:
        return proxy_services.update_certificate(actor, cert, private_key_pem=key, note=note,
                                           ca_bundle_pem=trusted_bundle(ca_bundle_pem), **fields)
    except ValidationError:
        cert.refresh_from_db()  # the caller's instance must not keep the refused values
        raise
