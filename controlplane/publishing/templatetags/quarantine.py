"""``{% quarantine_notice obj %}``: the notice on a route, pool or certificate page when a
node's rejection keeps that object (or the pool or certificate a route needs) out of
the config."""
from django import template

from controlplane.publishing.quarantined import in_force, keeping_out

register = template.Library()


@register.inclusion_tag("dashboard/partials/quarantine_notice.html")
def quarantine_notice(obj):
    kept_out = keeping_out(obj, in_force())
    own = kept_out is not None and (kept_out.kind, kept_out.object_id) == (obj._meta.model_name, obj.pk)
    return {"q": kept_out, "own": own, "kind": obj._meta.model_name}
