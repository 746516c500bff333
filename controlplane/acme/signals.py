"""A route saved with ``acme`` on gets (or updates) its order, run once the save commits."""
from __future__ import annotations

from django.db import transaction

from . import services, tasks


def route_saved(sender, instance, raw=False, **kwargs) -> None:
    if raw:
        return
    order = services.sync_route(instance)
    if order is not None:
        order_id = order.pk
        transaction.on_commit(lambda: tasks.queue(order_id))


def certificate_deleted(sender, instance, **kwargs) -> None:
    """Deleting an on-demand certificate drops its order (and frees its place in the
    delegation's quota); a later handshake for the name may order it again."""
    from .models import Order

    Order.objects.filter(on_demand=True, certificate_id=instance.pk).delete()
