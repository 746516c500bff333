"""A service's ``ValidationError`` shown in the dashboard, in the service's own words.

Every view reports refusals through these, so a message reads the same on every page
(and as in the API): on a form, a message lands on the field it names and the rest
above the form as ``field: message``; without a form, the same text becomes a flash
message.
"""
from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError


def error_items(exc: ValidationError) -> list[tuple[str | None, str]]:
    """(field name or None, message) for every message of ``exc``."""
    if hasattr(exc, "error_dict"):
        return [(None if field == NON_FIELD_ERRORS else field, message)
                for field, field_messages in exc.message_dict.items() for message in field_messages]
    return [(None, message) for message in exc.messages]


def _labelled(field: str | None, message: str) -> str:
    return f"{field}: {message}" if field else message


def add_validation_errors(form, exc: ValidationError) -> None:
    """Put ``exc``'s messages on ``form``: on the field they name (through the form's
    ``field_aliases`` when the service names it differently), else above the form."""
    aliases = getattr(form, "field_aliases", {})
    for field, message in error_items(exc):
        target = aliases.get(field, field)
        if target is not None and target in form.fields:
            form.add_error(target, message)
        else:
            form.add_error(None, _labelled(field, message))


def error_messages(exc: ValidationError) -> list[str]:
    """``exc``'s messages as lines of text, for a page without a form."""
    return [_labelled(field, message) for field, message in error_items(exc)]


def flash_validation_errors(request, exc: ValidationError, prefix: str = "") -> None:
    for message in error_messages(exc):
        messages.error(request, prefix + message)
