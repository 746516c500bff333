"""Entry points other apps call when something alert-worthy happens.

Each hook records an ``Alert`` row (what the dashboard lists) through
``services.raise_alert``, which queues its delivery to the channels concerned (the
owning tenant's and the platform's) once the transaction commits. Hooks are
synchronous; from async code call them through ``sync_to_async``.
"""
from __future__ import annotations

from django.conf import settings

from controlplane.alerts.models import Alert
from controlplane.alerts.services import raise_alert


def _debounce_seconds() -> float:
    return float(getattr(settings, "SWITCHYARD_ALERT_DEBOUNCE_SECONDS", 300))


def target_transition(target, healthy: bool, reason: str = "") -> Alert | None:
    """An upstream target changed health state (after its thresholds). Raises
    ``target_up`` / ``target_down`` for the pool's tenant; debounced: at most one alert
    per target and state within ``SWITCHYARD_ALERT_DEBOUNCE_SECONDS``, so a flapping
    target does not flood anyone. Returns None when debounced."""
    pool = target.pool
    state = "up" if healthy else "down"
    address = f"{target.host}:{target.port}"
    subject = f"Target {address} in pool {pool.name} is {state.upper()}"
    if reason:
        subject += f": {reason}"
    body = (f"Pool {pool.name}: target {address} is now {'healthy' if healthy else 'unhealthy'}"
            + (f" ({reason})" if reason else "") + ".")
    if not healthy:
        check = f"{pool.health_check_type} {pool.health_check_path}" if pool.health_check_type == "http" \
            else pool.health_check_type
        body += f"\nCheck that the backend listens on that address and passes the pool's {check} health check."
    return raise_alert(
        "target_up" if healthy else "target_down",
        tenant=pool.tenant,
        subject=subject,
        body=body,
        dedup_key=f"target:{target.pk}:{state}",
        data={"pool": pool.name, "pool_id": pool.pk, "target": address, "target_id": target.pk,
              "healthy": bool(healthy), "reason": reason},
        debounce_seconds=_debounce_seconds(),
    )


def node_rejected_config(node, version: int, errors: list[dict]) -> Alert:
    """A data-plane node NACKed a pushed version with errors that name no object it could
    quarantine (``object_quarantined`` alerts the others). Platform alert, once per node
    and version."""
    dedup_key = f"node_rejected_config:{node.pk}:{version}"
    existing = Alert.objects.filter(kind="node_rejected_config", dedup_key=dedup_key).first()
    if existing is not None:
        return existing
    first = errors[0] if errors else {"path": "", "message": "no details"}
    detail = f"{first.get('path')}: {first.get('message')}" if first.get("path") else first.get("message")
    lines = [f"Node {node.name} rejected config version {version} and keeps running "
             f"version {node.applied_version if node.applied_version is not None else 'none'}.", ""]
    lines += [f"- {e.get('path') or '(snapshot)'}: {e.get('message')}" for e in errors]
    alert = raise_alert(
        "node_rejected_config",
        tenant=None,
        subject=f"Node {node.name} rejected config v{version}: {detail}"[:300],
        body="\n".join(lines),
        dedup_key=dedup_key,
        data={"node": node.name, "node_id": node.pk, "version": version, "errors": errors},
        once=True,
    )
    if alert is None:  # raised concurrently by another process
        alert = Alert.objects.get(kind="node_rejected_config", dedup_key=dedup_key)
    return alert


def object_quarantined(quarantine, left_out_of: int | None) -> Alert | None:
    """A node rejected a route, pool or certificate, which is now left out of the config
    (version ``left_out_of``) until its owner saves it again. The ``node_rejected_config``
    alert of that NACK: to the owner's channels and the platform's, once per object and
    rejected version."""
    q = quarantine
    lines = [f"Node {q.node_name} rejected config version {q.version} because of {q.kind} {q.object_name}.",
             f"It is quarantined: left out of {f'version {left_out_of}' if left_out_of else 'the next versions'} "
             "so that every other change still reaches the nodes. Fix it and save it again to put it back "
             "(deleting it lifts the quarantine too).", ""]
    lines += [f"- {e.get('path') or '(snapshot)'}: {e.get('message')}" for e in q.errors]
    return raise_alert(
        "node_rejected_config",
        tenant=q.tenant,
        subject=f"{q.kind.capitalize()} {q.object_name} quarantined: node {q.node_name} rejected it: {q.error}",
        body="\n".join(lines),
        dedup_key=f"quarantine:{q.kind}:{q.object_id}:{q.version}",
        data={"node": q.node_name, "node_id": q.node_id, "version": q.version, "kind": q.kind,
              "object_id": q.object_id, "object": q.object_name, "errors": q.errors, "left_out_of": left_out_of},
        once=True,
    )


def node_disconnected(node) -> Alert | None:
    """A data-plane node's sync connection dropped. Platform alert, debounced per node."""
    last_seen = f"{node.last_seen:%Y-%m-%d %H:%M:%S} UTC" if getattr(node, "last_seen", None) else "never"
    return raise_alert(
        "node_disconnected",
        tenant=None,
        subject=f"Node {node.name} disconnected",
        body=(f"Data-plane node {node.name} lost its sync connection to the control plane "
              f"(last seen {last_seen}, applied version {node.applied_version}). It keeps serving "
              "its last applied config but receives no changes until it reconnects."),
        dedup_key=f"node:{node.pk}:disconnected",
        data={"node": node.name, "node_id": node.pk, "applied_version": node.applied_version},
        debounce_seconds=_debounce_seconds(),
    )


def acme_failed(*, tenant=None, name: str, error: str, dedup_key: str = "") -> Alert | None:
    """Obtaining or renewing an ACME certificate failed (debounced per certificate)."""
    return raise_alert(
        "acme_failed",
        tenant=tenant,
        subject=f"ACME certificate for {name} could not be obtained: {error}"[:300],
        body=error,
        dedup_key=dedup_key or f"acme:{name}",
        data={"name": name, "error": error},
        debounce_seconds=_debounce_seconds(),
    )
