"""Database connections around long waits.

With ``DATABASE_URL`` connections come from a per-process pool (aerostack/environ.py ``database_from_url``).
A gateway request that has done its database work (token, catalog) and is about to wait on an upstream,
possibly for minutes, gives its connection back first, so connections are bounded by the pool and not by
the number of calls in flight. On SQLite (one file, no server) there is nothing to give back.
"""

from __future__ import annotations

from functools import cache

from django.db import DEFAULT_DB_ALIAS, connections


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
