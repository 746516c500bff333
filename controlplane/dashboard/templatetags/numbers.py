"""Numbers shown one way on every page: rates as a percentage with two decimals, times in
milliseconds."""
from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def percent(ratio):
    """A share (0.9688) as "96.88%"; "–" when unknown."""
    try:
        return f"{float(ratio) * 100:.2f}%"
    except (TypeError, ValueError):
        return "–"


@register.filter
def ms(seconds):
    """Seconds (0.0123) as "12.3 ms"; "–" when unknown."""
    try:
        return f"{float(seconds) * 1000:.1f} ms"
    except (TypeError, ValueError):
        return "–"
