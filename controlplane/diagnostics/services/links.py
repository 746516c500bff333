"""How answers name other things: links to the next diagnostic (built from the URL
configuration) and ISO 8601 times."""
from __future__ import annotations

from urllib.parse import unquote, urlencode

from django.urls import reverse


def url(name: str, *args, **query) -> str:
    """The path of diagnostics endpoint ``name`` (see ``diagnostics/urls.py``), with a
    query string built from ``query`` in its order."""
    path = reverse(f"api:diagnostics:{name}", args=args)
    return f"{path}?{urlencode(query)}" if query else path


def template(name: str) -> str:
    """The path of ``name`` with ``{id}`` where its one argument goes."""
    return unquote(reverse(f"api:diagnostics:{name}", args=["{id}"]))


def iso(value):
    return value.isoformat() if value else None
