"""The usage log: one row per tools/call and per refused request, written off the request path.

Rows are queued in memory and written in batches by one background thread per process, so a gateway call
never waits for an INSERT (about 0.8 ms on SQLite). Each batch is one short transaction: the raw rows (one
``executemany`` of the stored values, no model instances), the rollups they add to (``analytics.rollups``:
aggregated in Python, added by one ``executemany`` of an upsert) and the count of rows dropped since the last
batch.

The queue is bounded: under a flood, rows beyond it are dropped rather than growing memory without limit,
and so is a batch the database refuses twice (the database is down). Dropped rows are never silently lost:
they are counted per workspace, day and reason in ``analytics.DroppedUsage`` as soon as the database takes a
write again, and the Analytics tab shows the count as a warning. At exit the queue is flushed.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import NamedTuple

from django.conf import settings
from django.db import DatabaseError, IntegrityError, close_old_connections, connection, transaction

from aerostack.db import batch_cursor, datetime_adapter, release_connection
from analytics import rollups
from analytics.models import DroppedUsage
from gateway.models import Server, UsageEvent
from tokens.models import Token
from workspaces.models import Member, Workspace

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
FLUSH_INTERVAL_SECONDS = 0.25
QUEUE_LIMIT = 100_000
# How often the writer retries saving dropped-row counts while no usage arrives (the database was down).
DROPPED_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class Usage:
    workspace_id: int | None
    token_id: int | None
    member_id: int | None
    server_id: int | None
    server_slug: str
    tool: str  # the upstream's own tool name ("" when the name matches no upstream tool)
    method: str
    created_at: datetime
    duration_ms: float
    outcome: str
    http_status: int
    detail: str = ""
    exposed_name: str = ""  # the name the client called
    upstream_ms: float | None = None  # time waiting on the upstream within duration_ms
    client_name: str = ""
    client_version: str = ""

    def stored(self) -> StoredUsage:
        """The row as it is stored: texts cut to their columns, times rounded to the microsecond."""
        upstream = self.upstream_ms
        return StoredUsage(
            self.workspace_id,
            self.token_id,
            self.member_id,
            self.server_id,
            self.server_slug[:32],
            self.tool[:200],
            self.exposed_name[:200],
            self.method[:100],
            self.created_at,
            round(self.duration_ms, 3),
            None if upstream is None else round(min(upstream, self.duration_ms), 3),
            self.client_name[:100],
            self.client_version[:50],
            self.outcome,
            self.http_status,
            self.detail[:300],
        )


class StoredUsage(NamedTuple):
    """A ``UsageEvent`` row's values, in the order of ``_insert_sql``'s columns (read by the rollups too)."""

    workspace_id: int | None
    token_id: int | None
    member_id: int | None
    server_id: int | None
    server_slug: str
    tool: str
    exposed_name: str
    method: str
    created_at: datetime
    duration_ms: float
    upstream_ms: float | None
    client_name: str
    client_version: str
    outcome: str
    http_status: int
    detail: str


_CREATED_AT = StoredUsage._fields.index("created_at")


@cache
def _insert_sql(vendor: str) -> str:
    """One row's INSERT into UsageEvent, every column but the id (sent with ``executemany``)."""
    quote = connection.ops.quote_name
    meta = UsageEvent._meta
    column = {field.attname: str(field.column) for field in meta.concrete_fields}
    columns = ", ".join(quote(column[name]) for name in StoredUsage._fields)
    placeholders = ", ".join(["%s"] * len(StoredUsage._fields))
    return f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders})"  # noqa: S608 - names from the model


def _insert(rows: list[StoredUsage]) -> None:
    """The raw rows, in one ``executemany``: no model instance is built (Django's ``bulk_create`` cost twice
    the rest of a batch)."""
    adapt = datetime_adapter(connection)
    at = _CREATED_AT
    params = [(*row[:at], adapt(row.created_at), *row[at + 1 :]) for row in rows]
    with batch_cursor(connection) as cursor:
        cursor.executemany(_insert_sql(connection.vendor), params)


class _Writer:
    def __init__(self) -> None:
        self.queue: queue.Queue[Usage] = queue.Queue(maxsize=QUEUE_LIMIT)
        self.dropped = 0  # in this process's lifetime
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Dropped rows not yet counted in the database: (workspace id, UTC day, reason) -> rows.
        self._pending: Counter[rollups.DroppedKey] = Counter()
        self._pending_lock = threading.Lock()
        self._write_lock = threading.Lock()  # one batch at a time (the thread, flush() and sync writes)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="aerostack-usage", daemon=True)
                self._thread.start()

    def put(self, usage: Usage) -> None:
        self._ensure_thread()
        try:
            self.queue.put_nowait(usage)
        except queue.Full:
            self.drop([usage], DroppedUsage.Reason.QUEUE_FULL)

    def drop(self, rows: Sequence[Usage | StoredUsage], reason: str) -> None:
        with self._pending_lock:
            self.dropped += len(rows)
            for row in rows:
                self._pending[(row.workspace_id, row.created_at.astimezone(UTC).date(), reason)] += 1

    def _take_pending(self) -> Counter[rollups.DroppedKey]:
        with self._pending_lock:
            pending, self._pending = self._pending, Counter()
        return pending

    def _give_back(self, pending: Counter[rollups.DroppedKey]) -> None:
        with self._pending_lock:
            self._pending.update(pending)

    @property
    def pending_dropped(self) -> int:
        with self._pending_lock:
            return sum(self._pending.values())

    def _drain(self) -> list[Usage]:
        batch: list[Usage] = []
        while len(batch) < BATCH_SIZE:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def write(self, first: list[Usage] | None = None) -> int:
        written = 0
        with self._write_lock:
            while batch := (first or []) + self._drain():
                first = None
                written += self._write_batch([usage.stored() for usage in batch])
            if self._pending:
                self._write_batch([])  # counts of rows dropped earlier, while the database was away
        return written

    def _write_batch(self, rows: list[StoredUsage]) -> int:
        """One transaction: the rows, their rollups and the pending dropped counts. Returns rows written."""
        checked = False
        for attempt in range(3):
            pending = self._take_pending()
            try:
                with transaction.atomic():
                    if rows:
                        _insert(rows)
                        rollups.add_rows(rows)
                    rollups.add_dropped(pending)
                return len(rows)
            except IntegrityError:
                self._give_back(pending)
                if checked:
                    logger.exception("could not write %d usage rows", len(rows))
                    break
                # A token, member, server or workspace deleted meanwhile fails the whole batch (on PostgreSQL
                # at commit): keep the rows, without the references that are gone.
                rows = _forget_deleted_references(rows)
                checked = True
            except DatabaseError:
                self._give_back(pending)
                close_old_connections()  # a broken connection is replaced on the next attempt
                if attempt:
                    logger.exception("could not write %d usage rows", len(rows))
                    break
        if rows:
            self.drop(rows, DroppedUsage.Reason.DB_ERROR)
            logger.error("dropped %d usage rows (counted, shown on the Analytics tab)", len(rows))
        return 0

    def _run(self) -> None:
        last_retry = time.monotonic()
        while True:
            try:
                first = self.queue.get(timeout=FLUSH_INTERVAL_SECONDS)
            except queue.Empty:
                if self._pending and time.monotonic() - last_retry > DROPPED_RETRY_SECONDS:
                    last_retry = time.monotonic()
                    self.write()
                    release_connection()
                continue
            # Let a batch gather: one INSERT per interval instead of one per call under load.
            time.sleep(FLUSH_INTERVAL_SECONDS)
            self.write([first])
            release_connection()  # back to the pool between batches (PostgreSQL): the writer is mostly idle


def _forget_deleted_references(rows: list[StoredUsage]) -> list[StoredUsage]:
    """The rows without their references to objects that no longer exist (four indexed lookups)."""
    for attribute, model in (
        ("workspace_id", Workspace),
        ("token_id", Token),
        ("member_id", Member),
        ("server_id", Server),
    ):
        index = StoredUsage._fields.index(attribute)
        ids = {getattr(row, attribute) for row in rows} - {None}
        existing = set(model.objects.filter(pk__in=ids).values_list("pk", flat=True)) if ids else set()
        if gone := ids - existing:
            rows = [_without(row, index) if row[index] in gone else row for row in rows]
    return rows


def _without(row: StoredUsage, index: int) -> StoredUsage:
    values = list(row)
    values[index] = None
    return StoredUsage._make(values)


_writer = _Writer()


def record(usage: Usage) -> None:
    if settings.GATEWAY_USAGE_ASYNC:
        _writer.put(usage)
    else:
        _writer.write([usage])


def flush() -> int:
    """Write what is queued now (tests, shutdown)."""
    return _writer.write()


def _flush_at_exit() -> None:
    flush()
    if _writer.pending_dropped:
        logger.error("%d dropped usage rows could not be counted in the database", _writer.pending_dropped)


atexit.register(_flush_at_exit)
