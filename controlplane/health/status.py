"""Reading and announcing health state (cheap; safe from any process).

``health_generation()`` is bumped in the same transaction as every transition, so
a process the channel layer cannot reach (embedded mode: the in-memory layer does
not cross from the Celery worker to Daphne) can poll it and, when it changed,
send the nodes ``current_health()``.
"""
from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from controlplane.health.models import HealthState
from controlplane.proxy.models import Target
from dataplane import schema

SINGLETON = 1


def health_generation() -> int:
    """The current health generation (0 before the first transition)."""
    value = HealthState.objects.filter(pk=SINGLETON).values_list("generation", flat=True).first()
    return int(value or 0)


def bump_generation() -> None:
    """Call inside the transaction that changed ``Target.healthy``."""
    now = timezone.now()
    if HealthState.objects.filter(pk=SINGLETON).update(generation=F("generation") + 1, updated=now):
        return
    try:
        with transaction.atomic():
            HealthState.objects.create(pk=SINGLETON, generation=1, updated=now)
    except IntegrityError:  # created concurrently
        HealthState.objects.filter(pk=SINGLETON).update(generation=F("generation") + 1, updated=now)


def current_health(pool_ids=None) -> dict[int, bool]:
    """``{target id: healthy}`` for every target (of ``pool_ids`` when given)."""
    qs = Target.objects.all()
    if pool_ids is not None:
        qs = qs.filter(pool_id__in=list(pool_ids))
    return dict(qs.values_list("id", "healthy"))


def health_snapshot(pool_ids=None) -> tuple[int, dict[int, bool]]:
    """(generation, current_health()).

    The generation is read first and no transaction is needed: a transition that
    commits between the two reads is already in the state sent and will also bump
    the generation past the one returned, so it is at worst sent twice, never missed.
    (No transaction also means no write lock on SQLite, where atomic() is IMMEDIATE.)
    """
    generation = health_generation()
    return generation, current_health(pool_ids)


def health_message(targets: dict[int, bool]) -> dict:
    """The node-facing message (schema.MSG_HEALTH) for a health state."""
    return {"type": schema.MSG_HEALTH, "targets": {str(k): bool(v) for k, v in targets.items()}}
