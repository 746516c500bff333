"""What of an alert a principal sees, for the API and the dashboard alike.

A tenant's alert is also delivered to the platform's channels; those deliveries
(channel names, errors naming the platform's webhook hosts) are the platform's
business. A tenant member sees only the deliveries to its own tenants' channels.
"""
from __future__ import annotations

from django.db.models import Prefetch

from .models import Delivery


def with_visible_deliveries(alerts, principal):
    """``alerts`` (a queryset) with ``deliveries`` holding only those ``principal`` may see."""
    deliveries = principal.scope(Delivery.objects.select_related("channel"), "channel__tenant")
    return alerts.prefetch_related(Prefetch("deliveries", queryset=deliveries))
