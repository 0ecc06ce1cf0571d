"""Token lifecycle: create, rotate, authenticate, revoke, status, touch.

The dashboard, the REST API, the CLI and the gateway all call these functions; none of them writes a token
row itself.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Q
from django.utils import timezone

from tokens import format as token_format
from tokens import scopes as token_scopes
from tokens.models import Token, active_at
from workspaces.models import Member, Workspace
from workspaces.permissions import Action, NotAllowed, require
from workspaces.services import audit_record

NAME_MAX_LENGTH = 100
# Ten years: longer than any sane lifetime, short enough that the date arithmetic never overflows.
EXPIRES_IN_MAX_SECONDS = 10 * 365 * 24 * 3600
# last_used_at is a hint for humans ("used 3 minutes ago"), not an audit trail: writing it on every request
# would turn every gateway call into a database write. Once a minute per token is precise enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# The grace periods the dashboard offers when rotating (any whole number of seconds up to the maximum is
# accepted by token_rotate): revoke now, 1 hour, 24 hours, 7 days.
GRACE_CHOICES = (0, 3600, 86400, 7 * 86400)
GRACE_MAX_SECONDS = 30 * 86400
# Gateway responses for a token that expires sooner than this name its expiry (EXPIRY_HEADER).
EXPIRY_NOTICE = timedelta(days=7)
EXPIRY_HEADER = "Aerostack-Token-Expiration"


class TokenError(ValueError):
    """A token operation was refused because of its input; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class CreatedToken:
    token: Token
    raw: str  # shown once to the user, then forgotten: never stored, logged or put in a session


class Refusal(enum.StrEnum):
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXPIRED = "expired"
    WRONG_WORKSPACE = "wrong_workspace"


@dataclass(frozen=True)
class Authentication:
    token: Token | None
    refusal: Refusal | None

    @property
    def ok(self) -> bool:
        return self.token is not None


def validate_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise TokenError("name", "Give the token a name, e.g. “Alice Cursor”.")
    if len(name) > NAME_MAX_LENGTH:
        raise TokenError("name", f"Use at most {NAME_MAX_LENGTH} characters (this one has {len(name)}).")
    return name


def validate_expires_in(expires_in: int | None) -> int | None:
    if expires_in is None:
        return None
    if isinstance(expires_in, bool) or not isinstance(expires_in, int):
        raise TokenError("expires_in", "The expiry must be a whole number of seconds.")
    if expires_in < 1:
        raise TokenError("expires_in", "The expiry must be at least 1 second.")
    if expires_in > EXPIRES_IN_MAX_SECONDS:
        raise TokenError(
            "expires_in", f"The expiry can be at most {EXPIRES_IN_MAX_SECONDS} seconds (10 years)."
        )
    return expires_in


def validate_scopes(
    *, workspace: Workspace, scopes: token_scopes.ScopeRequest | None
) -> token_scopes.StoredScopes | None:
    """The stored form of ``scopes`` (see ``tokens.scopes``); every server must be one of ``workspace``'s."""
    from gateway.models import Server  # the gateway app imports this module: import its model late

    try:
        stored = token_scopes.normalize(scopes)
    except ValueError as exc:
        raise TokenError("scopes", str(exc)) from None
    if stored is not None:
        wanted = set(token_scopes.server_ids(stored))
        known = set(Server.objects.filter(workspace=workspace, pk__in=wanted).values_list("pk", flat=True))
        if wanted - known:
            raise TokenError("scopes", "Choose servers of this workspace.")
    return stored


def _lock_holder(holder: Member) -> None:
    """Lock the holder's membership row for the rest of the transaction; refuse an ended membership.

    Every write that adds a working token takes this lock, so concurrent creates and rotations for one
    member are serialized (the token cap below cannot be overshot), and a removal running at the same moment
    either sees the new token (and revokes it) or has ended the membership first (and this is refused).
    """
    locked = Member.objects.select_for_update().filter(pk=holder.pk).values_list("ended_at", flat=True)
    if locked.first() is not None:
        raise TokenError("holder", f"{holder.display_name} is no longer a member of this workspace.")


def _require_room(holder: Member, now: datetime, *, replacing: Token | None = None) -> None:
    """At most ``TOKENS_PER_MEMBER_MAX`` working tokens per member and workspace. Call under _lock_holder.

    A token in its rotation grace period still works, so it counts until it stops; the token being rotated
    does not (its successor replaces it).
    """
    working = Token.objects.filter(active_at(now), member=holder, workspace_id=holder.workspace_id)
    if replacing is not None:
        working = working.exclude(pk=replacing.pk)
    limit = settings.TOKENS_PER_MEMBER_MAX
    if working.count() >= limit:
        raise TokenError(
            "holder",
            f"{holder.display_name} already holds {limit} active tokens in this workspace, the most one "
            "member may hold. Revoke one they no longer use first.",
        )


def token_create(
    *,
    workspace: Workspace,
    holder: Member,
    name: str,
    expires_in: int | None,
    created_by: User,
    scopes: token_scopes.ScopeRequest | None = None,
    now: datetime | None = None,
) -> CreatedToken:
    """Create a token for ``holder`` and return it with its raw value (the only time the value exists).

    Everyone may create tokens for themselves (``Action.TOKEN_OWN``); a token for another member needs
    ``Action.TOKEN_ANY`` (owners and admins, e.g. for a CI bot's account). The holder must be a current
    member, holding fewer than ``TOKENS_PER_MEMBER_MAX`` active tokens here (checked under a lock of the
    membership row, so concurrent creates cannot exceed it).

    ``scopes``: ``None`` (the default) for every server of the workspace, including servers added later;
    otherwise ``{server_id: None | [upstream tool name, ...]}``, an allow-list where ``None`` means all of
    that server's tools (see ``tokens.scopes``). Raises ``TokenError`` (with ``field``) for bad input or a
    full cap, ``NotAllowed`` when ``created_by`` may not do this.
    """
    name = validate_name(name)
    expires_in = validate_expires_in(expires_in)
    if holder.workspace_id != workspace.pk:
        raise TokenError("holder", "The holder must be a member of this workspace.")
    stored_scopes = validate_scopes(workspace=workspace, scopes=scopes)
    now = now or timezone.now()
    raw = token_format.generate()
    with transaction.atomic():
        _lock_holder(holder)
        _require_token_permission(workspace_id=workspace.pk, actor=created_by, holder=holder)
        _require_room(holder, now)
        token = Token.objects.create(
            workspace=workspace,
            member=holder,
            name=name,
            token_hash=token_format.hash_token(raw),
            hint=token_format.hint_for(raw),
            created_at=now,
            created_by=created_by,
            expires_at=now + timedelta(seconds=expires_in) if expires_in else None,
            scopes=stored_scopes,
        )
        audit_record(
            workspace=workspace,
            actor=created_by,
            action="token.create",
            target=f"token:{token.pk}",
            subject=holder.user,
            details={
                "name": name,
                "hint": token.hint,
                "holder": holder.display_name,
                "expires_in": expires_in,
                "scopes": stored_scopes,
            },
        )
    return CreatedToken(token=token, raw=raw)


def validate_grace(grace_seconds: int) -> int:
    if isinstance(grace_seconds, bool) or not isinstance(grace_seconds, int):
        raise TokenError("grace_seconds", "The grace period must be a whole number of seconds.")
    if not 0 <= grace_seconds <= GRACE_MAX_SECONDS:
        raise TokenError(
            "grace_seconds", f"The grace period must be between 0 and {GRACE_MAX_SECONDS} seconds (30 days)."
        )
    return grace_seconds


def token_rotate(
    *, token: Token, actor: User, grace_seconds: int, now: datetime | None = None
) -> CreatedToken:
    """Replace ``token`` with a new one and return the successor with its raw value (shown once).

    The successor has the same name, holder, scopes and lifetime policy (an old token that expired N seconds
    after its creation gives a successor that expires N seconds from now; no expiry stays no expiry) and
    links to its predecessor (``rotated_from``). The old token keeps working for ``grace_seconds``, never
    longer than its own expiry: its ``expires_at`` becomes ``min(now + grace, expires_at)``, so no job has to
    run when the grace ends. ``grace_seconds=0`` revokes it at once.

    Permissions as for ``token_revoke``: one's own tokens need ``Action.TOKEN_OWN``, anyone else's
    ``Action.TOKEN_ANY``. Refused (``TokenError``, field ``token``) for a revoked or expired token and for a
    token already rotated (rotate its successor instead: the chain goes on, and the first grace period is
    unchanged). The successor counts against ``TOKENS_PER_MEMBER_MAX`` in the old token's place. The audit
    row ``token.rotate`` is written in the same transaction; every node sees the old token's new expiry on
    its very next request (its shared-cache entry is replaced by a marker before this returns).
    """
    grace_seconds = validate_grace(grace_seconds)
    now = now or timezone.now()
    raw = token_format.generate()
    holder = token.member
    _require_token_permission(workspace_id=token.workspace_id, actor=actor, holder=holder)
    with transaction.atomic():
        _lock_holder(holder)
        old = Token.objects.select_for_update().get(pk=token.pk)
        status = old.status_at(now)
        if status != Token.Status.ACTIVE:
            raise TokenError(
                "token", f"This token is {status.label.lower()}: only an active token can be rotated."
            )
        if Token.objects.filter(rotated_from=old).exists():
            raise TokenError(
                "token", "This token was already rotated: rotate its successor, or revoke it to stop it now."
            )
        _require_room(holder, now, replacing=old)
        lifetime = old.expires_at - old.created_at if old.expires_at is not None else None
        successor = Token.objects.create(
            workspace_id=old.workspace_id,
            member=holder,
            name=old.name,
            token_hash=token_format.hash_token(raw),
            hint=token_format.hint_for(raw),
            created_at=now,
            created_by=actor,
            expires_at=now + lifetime if lifetime is not None else None,
            scopes=old.scopes,
            rotated_from=old,
        )
        if grace_seconds == 0:
            stops_at = now
            Token.objects.filter(pk=old.pk).update(revoked_at=now, revoked_by=actor)
        else:
            stops_at = now + timedelta(seconds=grace_seconds)
            if old.expires_at is not None:
                stops_at = min(stops_at, old.expires_at)
            Token.objects.filter(pk=old.pk).update(expires_at=stops_at)
        audit_record(
            workspace=token.workspace,
            actor=actor,
            action="token.rotate",
            target=f"token:{old.pk}",
            subject=holder.user,
            details={
                "name": old.name,
                "hint": old.hint,
                "successor": successor.pk,
                "successor_hint": successor.hint,
                "grace_seconds": grace_seconds,
                "stops_at": stops_at.isoformat(),
            },
        )
    # As for a revocation: before the caller hears "rotated", no node may serve the old expiry from cache.
    invalidate_cached(old)
    token.refresh_from_db(fields=["expires_at", "revoked_at", "revoked_by"])
    return CreatedToken(token=successor, raw=raw)


def expiry_header(token: Token, now: datetime) -> str | None:
    """The value of ``EXPIRY_HEADER`` for ``token`` at ``now``: its expiry in RFC 3339 UTC
    (``2026-12-08T10:00:00Z``) when that is less than ``EXPIRY_NOTICE`` away, else None."""
    expires_at = token.expires_at
    if expires_at is None or expires_at - now > EXPIRY_NOTICE:
        return None
    return expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# The shared-cache entry of a token that may have become invalid: every node goes back to the database.
_CHECK_DATABASE = "check-database"
_NOT_FETCHED: Any = object()
# Longer than any read-then-add race can take, so a stale positive entry can never be added after it.
TOMBSTONE_SECONDS = 600


def token_cache_key(raw: str) -> str | None:
    """The shared-cache key of a raw token (by its hash), or None when the value is not a token at all."""
    if not token_format.is_well_formed(raw):
        return None
    return f"tok:{token_format.hash_token(raw)}"


def token_authenticate(
    *,
    raw: str,
    workspace_slug: str,
    now: datetime | None = None,
    cached: Any = _NOT_FETCHED,
    token_hash: str | None = None,
) -> Authentication:
    """Who holds ``raw``, or the precise reason it is refused for ``workspace_slug``.

    Without a shared cache (``TOKEN_CACHE_SECONDS=0``, the embedded setup) every call reads the token row.
    With one (Redis), an active token is kept there for ``TOKEN_CACHE_SECONDS`` so a gateway request needs
    no database round trip; ``token_revoke`` replaces the entry with a marker that sends every node back to
    the database, and entries are only ever *added*, never overwritten, so a read that raced the revocation
    cannot put the old state back. Revocation is therefore seen by the very next request on every node,
    and expiry is checked against the clock on every request. ``cached`` is the entry when the caller
    already fetched it (the gateway reads it together with its other per-request keys). ``token_hash``:
    the caller has checked that ``raw`` is well formed and hashed it (the gateway needs both before), so
    neither is done again here.
    """
    if token_hash is None:
        if not token_format.is_well_formed(raw):
            return Authentication(None, Refusal.MALFORMED)
        token_hash = token_format.hash_token(raw)
    key = f"tok:{token_hash}"
    use_cache = settings.TOKEN_CACHE_SECONDS > 0
    if use_cache and cached is _NOT_FETCHED:
        cached = cache.get(key)
    if use_cache and isinstance(cached, Token):
        token: Token | None = cached
    else:
        token = _token_by_hash(token_hash)
        if token is None:
            return Authentication(None, Refusal.UNKNOWN)
        if use_cache and cached is None and token.revoked_at is None:
            cache.add(key, token, settings.TOKEN_CACHE_SECONDS)
    assert token is not None
    if token.workspace.slug != workspace_slug:
        return Authentication(None, Refusal.WRONG_WORKSPACE)
    status = token.status_at(now or timezone.now())
    if status == Token.Status.REVOKED:
        return Authentication(None, Refusal.REVOKED)
    if status == Token.Status.EXPIRED:
        return Authentication(None, Refusal.EXPIRED)
    return Authentication(token, None)


def invalidate_cached(token: Token) -> None:
    """After any change to a token (revoked, rotated, deleted): no node serves its cached state, and its open
    GET streams check it again at once (gateway/live.py)."""
    from gateway import live  # the gateway app imports this module

    if settings.TOKEN_CACHE_SECONDS > 0:
        cache.set(f"tok:{token.token_hash}", _CHECK_DATABASE, TOMBSTONE_SECONDS)
    live.token_changed(token.pk)


def tokens_invalidate_cached(*, workspace_id: int) -> None:
    """Send every node back to the database for all tokens of a workspace, e.g. after its settings (the
    rate limit travels with the cached token) changed. Rare writes; a query and one cache write."""
    from gateway import live

    if settings.TOKEN_CACHE_SECONDS > 0:
        hashes = Token.objects.filter(workspace_id=workspace_id, revoked_at__isnull=True).values_list(
            "token_hash", flat=True
        )
        cache.set_many({f"tok:{token_hash}": _CHECK_DATABASE for token_hash in hashes}, TOMBSTONE_SECONDS)
    live.tokens_changed(workspace_id)


class _TokenLookup:
    """``Token.objects.select_related("workspace").get(token_hash=...)`` as one prepared SQL text.

    The gateway runs this lookup on every request. Built through the ORM it costs ~0.4 ms of CPU per call
    (query compilation) where the SQL itself takes ~20 µs on SQLite; so the statement and the column
    converters are built once per database vendor, and rows become model instances through
    ``Model.from_db``, exactly as the ORM makes them.
    """

    def __init__(self, db: BaseDatabaseWrapper) -> None:
        quote = db.ops.quote_name
        self.token_fields = list(Token._meta.concrete_fields)
        self.workspace_fields = list(Workspace._meta.concrete_fields)
        columns = [f"t.{quote(str(f.column))}" for f in self.token_fields]
        columns += [f"w.{quote(str(f.column))}" for f in self.workspace_fields]
        # Only model metadata goes into the text; the hash is a bound parameter.
        self.sql = (
            f"SELECT {', '.join(columns)} FROM {quote(Token._meta.db_table)} t "  # noqa: S608
            f"JOIN {quote(Workspace._meta.db_table)} w ON w.{quote('id')} = t.{quote('workspace_id')} "
            f"WHERE t.{quote('token_hash')} = %s"
        )
        self.qmark_sql = self.sql.replace("%s", "?") if db.vendor == "sqlite" else None
        self.converters: list[tuple[Any, list[Any]]] = []
        for field in self.token_fields + self.workspace_fields:
            column = field.get_col(field.model._meta.db_table)
            self.converters.append(
                (column, [*db.ops.get_db_converters(column), *field.get_db_converters(db)])
            )
        self.token_names = [f.attname for f in self.token_fields]
        self.workspace_names = [f.attname for f in self.workspace_fields]

    def fetch(self, db: BaseDatabaseWrapper, token_hash: str) -> Token | None:
        # The statement goes to the DB-API cursor under Django's wrapper: for SQLite the wrapper rewrites
        # ``%s`` to ``?`` with a regex on every execute, which costs about as much as the query. The text is
        # rewritten once here instead, and wrap_database_errors keeps Django's exception types.
        with db.cursor() as cursor, db.wrap_database_errors:
            raw = cursor.cursor
            if self.qmark_sql is not None:
                return self._fetch_sqlite(db, raw, self.qmark_sql, token_hash)
            raw.execute(self.sql, (token_hash,))
            row = raw.fetchone()
        return self._token(db, row)

    def _fetch_sqlite(
        self, db: BaseDatabaseWrapper, raw: sqlite3.Cursor, sql: str, token_hash: str
    ) -> Token | None:
        """The token, reused from this thread's connection while the database has not changed at all.

        ``PRAGMA data_version`` changes when any other connection (another thread, the usage writer,
        another process such as the CLI) commits, and ``total_changes`` when this one writes: while both
        are what they were at the last read, no row can differ from what that read returned. A revocation
        is a write, so the very next request reads the row again. Costs one PRAGMA instead of the query and
        two model instances; the per-thread store is dropped whenever the connection is replaced.
        """
        connection = db.connection
        stamp = (sqlite3.Cursor.execute(raw, "PRAGMA data_version").fetchone()[0], connection.total_changes)
        store: tuple[sqlite3.Connection, dict[str, tuple[tuple[int, int], Token]]] | None = getattr(
            _sqlite_reads, "store", None
        )
        if store is None or store[0] is not connection:
            store = _sqlite_reads.store = (connection, {})
        entries = store[1]
        entry = entries.get(token_hash)
        if entry is not None and entry[0] == stamp:
            return entry[1]
        sqlite3.Cursor.execute(raw, sql, (token_hash,))
        token = self._token(db, raw.fetchone())
        if token is not None:
            if len(entries) >= SQLITE_READS_KEPT:
                entries.clear()
            entries[token_hash] = (stamp, token)
        return token

    def _token(self, db: BaseDatabaseWrapper, row: Any) -> Token | None:
        if row is None:
            return None
        values = list(row)
        for index, (column, converters) in enumerate(self.converters):
            for converter in converters:
                values[index] = converter(values[index], column, db)
        split = len(self.token_names)
        token = Token.from_db(db.alias, self.token_names, values[:split])
        workspace = Workspace.from_db(db.alias, self.workspace_names, values[split:])
        Token.workspace.field.set_cached_value(token, workspace)
        return token


_lookups: dict[str, _TokenLookup] = {}
_sqlite_reads = threading.local()
SQLITE_READS_KEPT = 1024  # tokens per thread and connection; the store starts afresh beyond it


def _token_by_hash(token_hash: str) -> Token | None:
    db = connections[DEFAULT_DB_ALIAS]
    lookup = _lookups.get(db.vendor)
    if lookup is None:
        lookup = _lookups[db.vendor] = _TokenLookup(db)
    return lookup.fetch(db, token_hash)


def _require_token_permission(*, workspace_id: int, actor: User, holder: Member) -> None:
    """One's own tokens need ``TOKEN_OWN``, anyone else's ``TOKEN_ANY``; outsiders may do neither."""
    if holder.user_id == actor.pk and holder.ended_at is None:
        acting = holder
    else:
        found = Member.objects.current().filter(workspace_id=workspace_id, user_id=actor.pk).first()
        if found is None:
            raise NotAllowed("You are not a member of this workspace.")
        acting = found
    require(acting, Action.TOKEN_OWN if holder.user_id == actor.pk else Action.TOKEN_ANY)


def token_revoke(*, token: Token, actor: User | None, now: datetime | None = None) -> Token:
    """Revoke ``token`` for good. Idempotent: revoking a revoked token changes nothing and records nothing.

    ``actor`` may revoke their own tokens, owners and admins anyone's (checked here); ``None`` is the
    operator acting on the server itself (``manage.py``), who needs no membership.
    """
    now = now or timezone.now()
    if actor is not None:
        _require_token_permission(workspace_id=token.workspace_id, actor=actor, holder=token.member)
    with transaction.atomic():
        # The conditional UPDATE settles a race between two revokers: exactly one of them records it.
        changed = Token.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=now, revoked_by=actor
        )
        if changed:
            audit_record(
                workspace=token.workspace,
                actor=actor,
                action="token.revoke",
                target=f"token:{token.pk}",
                subject=token.member.user,
                details={"name": token.name, "hint": token.hint},
            )
    # Synchronously, before the caller hears "revoked": no node may keep serving a cached positive answer.
    invalidate_cached(token)
    token.refresh_from_db(fields=["revoked_at", "revoked_by"])
    return token


def token_status(token: Token, now: datetime | None = None) -> Token.Status:
    return token.status_at(now or timezone.now())


_touched: dict[str, datetime] = {}  # by token hash: ids can be reused by tests that roll back


def token_touch(token: Token, now: datetime | None = None) -> bool:
    """Record that ``token`` was used, at most once per ``LAST_USED_RESOLUTION``. True when it wrote.

    The conditional UPDATE keeps it to one write a minute across all nodes; the in-process note of the last
    touch spares the query itself when the token came from the shared cache with an old ``last_used_at``.
    """
    now = now or timezone.now()
    seen = max(filter(None, (token.last_used_at, _touched.get(token.token_hash))), default=None)
    if seen is not None and now - seen < LAST_USED_RESOLUTION:
        return False
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    written = Token.objects.filter(stale, pk=token.pk).update(last_used_at=now)
    token.last_used_at = now
    _touched[token.token_hash] = now
    return bool(written)
