"""The platform default error pages (staff only): validate → write → publish → audit.

A route's own pages are its ``error_pages`` field and go through ``services`` with the
rest of the route. Both are checked by ``dataplane.errorpages.check_page``, the very
check the nodes run on the snapshot.
"""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from controlplane.audit.services import record
from controlplane.publishing import publisher
from dataplane import errorpages

from . import services
from .models import ErrorPage

STATUSES = errorpages.STATUSES
ROUTE_STATUSES = errorpages.ROUTE_STATUSES
PLACEHOLDERS = errorpages.PLACEHOLDERS
MAX_PAGE_BYTES = errorpages.MAX_PAGE_BYTES


def validate_error_page(status, body) -> None:
    problems = errorpages.check_page(status, body)
    if status not in STATUSES:
        raise ValidationError({"status": [problems[0]]})
    if problems:
        raise ValidationError({"body": problems})


def route_page_errors(pages) -> dict[str, list[str]]:
    """A route's ``error_pages`` value → {status: problems} (empty: valid)."""
    _, problems = errorpages.check_pages(pages, ROUTE_STATUSES)
    out: dict[str, list[str]] = {}
    for key, message in problems:
        out.setdefault(key, []).append(message)
    return out


def platform_pages() -> dict[int, ErrorPage]:
    return {p.status: p for p in ErrorPage.objects.order_by("status")}


def save_error_page(actor, status: int, body: str, *, note: str = "", if_match: str | None = None) -> ErrorPage:
    """Create or replace the platform default page of ``status``; one version, one audit entry."""
    validate_error_page(status, body)
    with transaction.atomic():
        publisher.lock()
        page = ErrorPage.objects.select_for_update().filter(status=status).first()
        if page is not None and not services.etag_matches(if_match, services.etag_of(page)):
            raise services.PreconditionFailed(services.etag_of(page))
        before = services.serialize(page) if page is not None else None
        if page is None:
            page = ErrorPage(status=status)
        page.body = body
        page.save()
        services._finish(actor, "update" if before else "create", page, before, note)
    return page


def delete_error_page(actor, page: ErrorPage, *, note: str = "", if_match: str | None = None) -> None:
    """Back to the built-in page for that status."""
    with services.locked_current(page, if_match) as current:
        before = services.serialize(current)
        current.delete()
        services._finish(actor, "delete", current, before, note, after=None)


def preview(status: int, body: str | None) -> str:
    """The page with sample values (the built-in one for None): for a sandboxed iframe."""
    return errorpages.preview(status, body)


def save_platform_pages(actor, pages: dict[int, str], *, note: str = "") -> None:
    """Set the platform pages from {status: body}; an empty body removes that status's
    page (the built-in one answers again). One version for the lot, one audit entry per
    page changed."""
    problems = {f"page_{s}": p for s, body in pages.items() if body.strip()
                for p in [errorpages.check_page(s, body)] if p}
    if problems:
        raise ValidationError(problems)
    done = []
    with transaction.atomic():
        publisher.lock()
        with publisher.batch(actor, note) as batch:
            stored = {p.status: p for p in ErrorPage.objects.select_for_update().filter(status__in=list(pages))}
            for status in sorted(pages):
                body, page = pages[status], stored.get(status)
                if not body.strip():
                    if page is not None:
                        before = services.serialize(page)
                        page.delete()
                        done.append(("delete", page, before, None, before["id"]))
                elif page is None or page.body != body:
                    before = services.serialize(page) if page is not None else None
                    page = page or ErrorPage(status=status)
                    page.body = body
                    page.save()
                    done.append(("update" if before else "create", page, before, services.serialize(page), None))
            if done:
                publisher.publish(actor, note)  # inside the batch: one version at its end
        number = batch.version.number if batch.version else None
        for action, page, before, after, object_id in done:
            record(actor, action, page, before, after, note, config_version=number, object_id=object_id)
