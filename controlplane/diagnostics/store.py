"""What the nodes report for diagnostics, stored: when each started, and the requests
captured for an armed capture session. Called by the sync connection (``relay``)."""
from __future__ import annotations

import datetime as dt
import uuid

from django.db import transaction
from django.utils import timezone

from controlplane.diagnostics.models import CapturedRequest, CaptureSession, NodeRuntime

CAPTURE_RETENTION = dt.timedelta(hours=24)
# A record may arrive shortly after its session expired: it was captured in time.
LATE_RECORD_GRACE = dt.timedelta(seconds=30)


def record_runtime(node_id: int, started: float) -> None:
    when = dt.datetime.fromtimestamp(started, tz=dt.timezone.utc)
    NodeRuntime.objects.update_or_create(node_id=node_id, defaults={"started": when})


def store_capture(node_id: int, sid: str, record: dict) -> bool:
    """A ``capture.record`` from a node: kept only for an existing, unexpired session of
    that route, at most ``count`` per session."""
    try:
        key = uuid.UUID(sid)
    except ValueError:
        return False
    with transaction.atomic():
        s = CaptureSession.objects.select_for_update().filter(pk=key).first()
        now = timezone.now()
        if s is None or s.expires <= now - LATE_RECORD_GRACE:
            return False
        if record.get("route_id") != s.route_id or (s.node_id and s.node_id != node_id):
            return False
        if CapturedRequest.objects.filter(session=s).count() >= s.count:
            return False
        CapturedRequest.objects.create(session=s, route_id=s.route_id, tenant_id=s.tenant_id,
                                       node_id=node_id, data=record,
                                       expires=now + CAPTURE_RETENTION)
    return True
