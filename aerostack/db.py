"""Database connections around long waits.

With ``DATABASE_URL`` connections come from a per-process pool (aerostack/environ.py ``database_from_url``).
A gateway request that has done its database work (token, catalog) and is about to wait on an upstream,
possibly for minutes, gives its connection back first, so connections are bounded by the pool and not by
the number of calls in flight. On SQLite (one file, no server) there is nothing to give back.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper


@cache
def _pooled() -> bool:
    return bool(connections[DEFAULT_DB_ALIAS].settings_dict.get("OPTIONS", {}).get("pool"))


def release_connection() -> None:
    """Return this thread's connection to the pool, unless a transaction is open on it. The next query
    takes one again (from the pool: no new connection is opened)."""
    if not _pooled():
        return
    connection = connections[DEFAULT_DB_ALIAS]
    if connection.connection is not None and not connection.in_atomic_block:
        connection.close()


def datetime_adapter(connection: BaseDatabaseWrapper) -> Callable[[datetime | None], Any]:
    """``connection.ops.adapt_datetimefield_value``, for raw SQL that sends many datetimes (the usage writer).

    On SQLite an aware datetime is adapted here without Django's checks, to what Django makes of it: the time
    in the connection's zone, naive, as text (a third of the cost). Anything else goes to Django.
    """
    adapt = connection.ops.adapt_datetimefield_value
    if connection.vendor != "sqlite" or not settings.USE_TZ:
        return adapt
    zone = connection.timezone

    def adapt_aware(value: datetime | None) -> Any:
        if value is None or value.utcoffset() is None:
            return adapt(value)
        return str(value.astimezone(zone).replace(tzinfo=None))

    return adapt_aware


def batch_cursor(connection: BaseDatabaseWrapper) -> Any:
    """A cursor for ``executemany`` of many rows of plain values (the usage writer's): on PostgreSQL one that
    binds the values on the server (psycopg's C dumpers, and the statement's text converted once), where
    Django's own cursors merge every value into the text in Python; elsewhere ``connection.cursor()``."""
    if connection.vendor != "postgresql":
        return connection.cursor()
    from django.db.backends.postgresql import base as postgresql

    connection.ensure_connection()
    server_binding: Any = postgresql.ServerBindingCursor  # psycopg's Cursor with Django's mixin
    cursor = server_binding(connection.connection)
    # Wrapped as Django wraps its own: logged (and seen by CaptureQueriesContext) when queries are.
    wrap = connection.make_debug_cursor if connection.queries_logged else connection.make_cursor
    return wrap(cursor)
