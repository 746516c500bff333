"""``{% object_history obj %}``: the audit entries of one route, pool or certificate
(changes, restores), newest first, on its page."""
from __future__ import annotations

from django import template

from controlplane.audit.models import AuditEntry

register = template.Library()


@register.inclusion_tag("dashboard/partials/history.html")
def object_history(obj, limit: int = 20):
    entries = AuditEntry.objects.filter(object_type=obj._meta.model_name, object_id=str(obj.pk))[:limit]
    return {"history": entries}
