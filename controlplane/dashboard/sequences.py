"""A preview gives back the ids it took.

A preview runs the real service call in a transaction that is rolled back. SQLite
rolls its id counters back with it; PostgreSQL's sequences are not transactional, so
the same change made after its preview would get other ids, its snapshot another
digest, and the dashboard would say "the configuration changed since the preview"
every time a pool or a route is created. ``ids_given_back()`` records the sequences of
the configuration tables under the config lock (every writer of those tables holds it)
and sets them back before the preview's transaction ends.
"""
from __future__ import annotations

import contextlib

from django.apps import apps
from django.db import connection

from controlplane.publishing import publisher

CONFIG_APPS = ("proxy",)


def _sequences() -> list[tuple[str, int, bool]]:
    state = []
    with connection.cursor() as cursor:
        for app in CONFIG_APPS:
            for model in apps.get_app_config(app).get_models():
                cursor.execute("SELECT pg_get_serial_sequence(%s, %s)", [model._meta.db_table, model._meta.pk.column])
                (name,) = cursor.fetchone()
                if name:
                    cursor.execute(f"SELECT last_value, is_called FROM {name}")  # a name from the catalog
                    last_value, is_called = cursor.fetchone()
                    state.append((name, last_value, is_called))
    return state


@contextlib.contextmanager
def ids_given_back():
    """Use inside the preview's transaction, around the previewed call."""
    if connection.vendor != "postgresql":
        yield
        return
    publisher.lock()
    state = _sequences()
    yield
    with connection.cursor() as cursor:
        for name, last_value, is_called in state:
            cursor.execute("SELECT setval(%s, %s, %s)", [name, last_value, is_called])
