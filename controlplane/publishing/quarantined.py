"""Which quarantines are in force and what they keep out of the config.

A quarantine holds while its object exists unchanged since the node rejected it: its
``updated`` is compared, so saving the object again (or deleting it) lifts it. The
compiler reads ``left_out``; ``quarantine`` records new quarantines.
"""
from __future__ import annotations

from django.db.models import Exists, OuterRef, Q

from controlplane.proxy.models import AccessList, Certificate, Pool, Route

from .models import Quarantine

MODELS = {Quarantine.ROUTE: Route, Quarantine.POOL: Pool, Quarantine.CERTIFICATE: Certificate,
          Quarantine.ACCESS_LIST: AccessList}

Key = tuple[str, int]  # (kind, object id)


def in_force() -> dict[Key, Quarantine]:
    """The quarantines that hold: their object exists, unchanged since it was rejected."""
    unchanged = Q()
    for kind, model in MODELS.items():
        same = model.objects.filter(pk=OuterRef("object_id"), updated=OuterRef("object_updated"))
        unchanged |= Q(kind=kind) & Q(Exists(same))
    return {(q.kind, q.object_id): q
            for q in Quarantine.objects.filter(unchanged).select_related("node").order_by("id")}


def left_out() -> dict[str, set[int]]:
    """Ids of the quarantined objects, by kind (what the compiler leaves out)."""
    ids: dict[str, set[int]] = {kind: set() for kind in MODELS}
    for kind, object_id in in_force():
        ids[kind].add(object_id)
    return ids


def keeping_out(obj, quarantines: dict[Key, Quarantine]) -> Quarantine | None:
    """The quarantine (of ``quarantines``, see ``in_force``) that keeps ``obj`` (a route,
    pool or certificate) out of the config: its own, or for a route that of its pool or
    of the certificate it names."""
    kind = obj._meta.model_name
    own = quarantines.get((kind, obj.pk))
    if own is not None or kind != Quarantine.ROUTE:
        return own
    return (quarantines.get((Quarantine.POOL, obj.pool_id))
            or quarantines.get((Quarantine.CERTIFICATE, obj.certificate_id))
            or quarantines.get((Quarantine.ACCESS_LIST, obj.access_list_id)))
