"""Data for the dashboard's charts (rendered by static/dashboard/charts.js with
Chart.js) and the certificate chain report. Pure reads; times are epoch milliseconds."""
from __future__ import annotations

import datetime as dt

from cryptography import x509
from django.utils import timezone

from controlplane.health.models import HealthTransition

HEALTH_WINDOW = dt.timedelta(hours=24)


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


def health_history(pool, targets) -> dict:
    """One step line per target over the last 24 h: 1 healthy, 0 unhealthy.

    Nothing is drawn for time the chart cannot speak for: before the pool was created,
    and before the target's health was first known (its first check result, or its
    first recorded transition), nor after it stopped being known (check switched off);
    a target never checked has an empty line."""
    now = timezone.now()
    start = now - HEALTH_WINDOW
    series = []
    by_target: dict[int, list] = {}
    for tr in HealthTransition.objects.filter(pool=pool).order_by("created", "id"):
        by_target.setdefault(tr.target_id, []).append(tr)
    for t in targets[:20]:
        transitions = by_target.get(t.pk, [])
        check = getattr(t, "check", None)
        known = [when for when in (getattr(check, "first_checked", None),
                                   transitions[0].created if transitions else None) if when]
        if not known and check is not None and check.last_checked is not None:
            known = [pool.created]  # checked before first_checked was recorded
        points = []
        if known:
            begin = max(start, pool.created, min(known))
            before = [tr for tr in transitions if tr.created <= begin]
            inside = [tr for tr in transitions if begin < tr.created <= now]
            if before:
                first = before[-1].healthy
            elif inside:
                # The state before the first transition is its opposite.
                first = not inside[0].healthy
            else:
                first = t.healthy
            points = [{"x": _ms(begin), "y": int(first)}]
            points += [{"x": _ms(tr.created), "y": int(tr.healthy), "reason": tr.reason} for tr in inside]
            end = now
            if getattr(t, "health_state", None) == "unknown":  # e.g. the check was switched off
                end = max([begin, *[tr.created for tr in inside],
                           *([check.last_checked] if check is not None and check.last_checked else [])])
            points.append({"x": _ms(end), "y": int(t.healthy)})
        note = "" if points else " (no active check)" if not pool.health_check_enabled else " (not checked yet)"
        series.append({"label": f"{t.host}:{t.port}{note}", "data": points})
    return {"type": "health", "start": _ms(start), "end": _ms(now), "series": series}


def certificate_expiry(certs) -> dict:
    """Days left per certificate (negative: expired), soonest first."""
    now = timezone.now()
    rows = []
    for c in certs:
        if c.not_after is None:
            continue
        days = (c.not_after - now).total_seconds() / 86400
        label = f"{c.tenant.slug}/{c.name}" if c.tenant_id else c.name
        rows.append({"label": label, "days": round(days, 1), "not_after": c.not_after.isoformat()})
    rows.sort(key=lambda r: r["days"])
    return {"type": "expiry", "rows": rows[:40]}


def chain_of(pem_text: str) -> list[dict]:
    """The certificates of a PEM bundle, leaf first, with what a person checks."""
    out = []
    try:
        chain = x509.load_pem_x509_certificates((pem_text or "").encode())
    except ValueError:
        return out
    for i, cert in enumerate(chain):
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.DNSName)
        except x509.ExtensionNotFound:
            sans = []
        out.append({
            "position": "leaf" if i == 0 else f"intermediate {i}",
            "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(),
            "not_before": cert.not_valid_before_utc,
            "not_after": cert.not_valid_after_utc,
            "serial": format(cert.serial_number, "x"),
            "sans": sans,
            "signed_by_next": (i + 1 < len(chain) and cert.issuer == chain[i + 1].subject),
        })
    return out
