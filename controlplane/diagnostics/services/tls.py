"""What a node's HTTPS listener presents for a name, and the chain report of a stored
certificate (expiry, completeness, the missing intermediate named)."""
from __future__ import annotations

import secrets
from typing import Any

from asgiref.sync import async_to_sync
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import Http404

from controlplane.pem import CHAIN_COMPLETE, inspect_pem
from controlplane.certs.services import trusted_bundle
from controlplane.proxy.models import Certificate, Route
from controlplane.tenancy.access import Principal
from controlplane.tenancy.models import Delegation
from dataplane import schema

from .access import bounded, int_or_404
from .links import iso, url
from .nodes import pick_node, run_on_node
from .probing import PROBE_TIMEOUT


def covers(suffix_or_host: str, name: str) -> bool:
    """Does a route host (``*.example.com`` or an exact name) cover ``name``?"""
    if suffix_or_host.startswith("*."):
        parent = name.split(".", 1)[1] if "." in name else ""
        return parent == suffix_or_host[2:]
    return name == suffix_or_host


def _sni_allowed(p: Principal, sni: str) -> bool:
    if p.staff:
        return True
    ids = list(p.tenant_ids)
    for d in Delegation.objects.filter(tenant_id__in=ids).values_list("suffix", flat=True):
        if sni == d or sni.endswith("." + d):
            return True
    for hosts in Route.objects.filter(tenant_id__in=ids).values_list("hosts", flat=True):
        if any(isinstance(h, str) and covers(h, sni) for h in hosts or ()):
            return True
    return False


def chain_report(pem_text: str, hosts: tuple = ()) -> dict:
    report = inspect_pem(pem_text, hosts=hosts, ca_bundle_pem=trusted_bundle())
    missing = [w for w in report.warnings if w.startswith("incomplete chain")]
    return {"subject": report.subject, "issuer": report.issuer, "sans": report.sans,
            "not_before": iso(report.not_before), "not_after": iso(report.not_after),
            "fingerprint": report.fingerprint, "chain_status": report.chain_status,
            "complete": report.chain_status == CHAIN_COMPLETE,
            "missing_intermediate": missing[0] if missing else None,
            "chain": report.chain, "warnings": report.warnings,
            "errors": [f"{k}: {m}" for k, ms in report.errors.items() for m in ms]}


def _sni(data: dict) -> str:
    try:
        sni = schema.normalize_host(str(data.get("sni") or ""))
        if sni.startswith("*."):
            raise ValueError("give a concrete name, not a wildcard")
    except ValueError as exc:
        raise ValidationError({"sni": [str(exc)]}) from None
    return sni


def _stored_certificate(p: Principal, fingerprint: str) -> dict | None:
    """The visible stored certificate with that fingerprint, if any."""
    stored = Certificate.objects.filter(fingerprint=fingerprint)
    if not p.staff:
        stored = stored.filter(Q(tenant_id__in=list(p.tenant_ids)))
    cert = stored.first()
    if cert is None:
        return None
    return {"id": cert.id, "name": cert.name, "chain_report": url("certificate-chain", cert.id)}


def tls_check(p: Principal, data: dict) -> dict:
    sni = _sni(data)
    if not _sni_allowed(p, sni):
        raise Http404("no route or delegation of yours covers this name")
    timeout = bounded(data.get("timeout"), PROBE_TIMEOUT, 0.1, 60.0, "timeout", float)
    node = pick_node(p, data.get("node"))
    msg = {"type": schema.MSG_TLS_CHECK, "id": secrets.token_hex(8), "sni": sni, "timeout": timeout}
    result = async_to_sync(run_on_node)(node, msg, timeout * 4 + 5)
    tls = result.get("tls") or {}
    chain = tls.get("chain") or []
    out: dict[str, Any] = {"node": {"id": node.id, "name": node.name}, "sni": sni,
                           "handshake": {k: tls.get(k) for k in ("ok", "version", "cipher", "alpn",
                                                                  "time_ms", "error")},
                           "presented": [{k: c.get(k) for k in ("subject", "issuer", "not_after",
                                                                 "sans")} for c in chain],
                           "report": None, "stored_certificate": None,
                           "error": None if tls.get("ok") else result.get("error")}
    pems = "".join(c.get("pem") or "" for c in chain)
    if pems:
        out["report"] = chain_report(pems, hosts=(sni,))
        out["stored_certificate"] = _stored_certificate(p, out["report"]["fingerprint"])
    http = result.get("http") or {}
    if http:
        out["http"] = {k: http.get(k) for k in ("status", "reason", "ttfb_ms", "error")}
    return out


def certificate_chain(p: Principal, pk: Any) -> dict:
    cert = p.get_or_404(Certificate.objects.select_related("tenant"), pk=int_or_404(pk))
    hosts = sorted({h for r in Route.objects.filter(certificate=cert)
                    for h in (r.hosts or []) if isinstance(h, str)})
    report = chain_report(cert.certificate_pem, hosts=tuple(hosts))
    return {"certificate": {"id": cert.id, "name": cert.name,
                            "tenant": cert.tenant.slug if cert.tenant_id else None},
            "hosts_checked": hosts, **report}
