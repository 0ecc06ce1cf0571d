"""What a workspace's gateway offers: its enabled upstream servers and their merged tool list.

A workspace's catalog has a version number kept in the shared cache. Every change to a server or a tool
setting bumps it (``invalidate``), on every node at once; each process keeps the server configurations of the
current version in memory, so routing a ``tools/call`` costs one small cache read, not a database query.
The merged tool list is kept in the shared cache for ``GATEWAY_TOOLS_CACHE_SECONDS`` under that version, and
pre-encoded in each process's memory until that entry expires.

Fairness: a workspace's rebuild waits at most ``GATEWAY_LIST_DEADLINE_SECONDS`` for its own upstreams, on
threads of their own (never a pool another workspace needs); concurrent rebuilds of one catalog version are
collapsed into one per process (``single_flight``) and, through a lease in the shared cache, across nodes;
an upstream whose lists keep failing is skipped for a while (``breaker``) and shown failing with the reason.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, wait
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Any, cast

from django.conf import settings
from django.core.cache import BaseCache, cache, caches
from django.utils import timezone

from gateway import breaker, live, protocol, single_flight
from gateway.crypto import CredentialUnreadable, decrypt
from gateway.models import Server
from gateway.upstream import UpstreamConfig, UpstreamError, session_for
from tokens import scopes as token_scopes

logger = logging.getLogger(__name__)

FAILED_LIST_CACHE_SECONDS = 5
# How often a node that waits for another node's rebuild looks for the result.
REBUILD_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class ServerEntry:
    id: int
    slug: str
    name: str
    config: UpstreamConfig | None  # None when its credential cannot be decrypted
    disabled_tools: frozenset[str]
    problem: str = ""


@dataclass(frozen=True)
class Route:
    server: ServerEntry
    tool: str  # the upstream's own name


@dataclass(frozen=True)
class ToolList:
    tools_json: bytes  # the merged ``tools`` array, encoded as the gateway sends it
    routes: dict[str, tuple[str, str]]  # exposed name -> (server slug, upstream tool name)
    failures: dict[str, str]  # server slug -> why it was left out
    expires_at: float  # time.time() when the shared cache lets it go: every node drops it then

    @property
    def tools(self) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", json.loads(self.tools_json))

    def result_json(self, request_id: protocol.RequestId) -> bytes:
        """The JSON-RPC response to ``tools/list`` with ``request_id``: the same bytes as encoding
        ``protocol.result_body(request_id, {"tools": self.tools})`` compactly, without encoding the tools."""
        return b"".join((_RESULT_HEAD, json.dumps(request_id).encode("ascii"), self._result_tail))

    @cached_property
    def _result_tail(self) -> bytes:
        return b',"result":{"tools":' + self.tools_json + b"}}"


_RESULT_HEAD = b'{"jsonrpc":"2.0","id":'


def version_key(workspace_id: int) -> str:
    return f"gw:catalog:{workspace_id}"


def version(workspace_id: int) -> int:
    key = version_key(workspace_id)
    value = cache.get(key)
    if value is None:
        # A random start (not 0) so a cache that lost the key can never fall back onto an old version.
        cache.add(key, secrets.randbelow(2**62), None)
        value = cache.get(key)
    return int(value)


def invalidate(workspace_id: int, lists: Iterable[str] = live.LISTS) -> None:
    """Call after any change to a workspace's servers or tool settings: every node sees it at once, and
    every open client stream of the workspace is told that ``lists`` changed (once the transaction, if any,
    has committed: gateway/live.py)."""
    try:
        current: int | None = cache.incr(version_key(workspace_id))
    except ValueError:
        current = version(workspace_id)
    live.lists_changed(workspace_id, lists, current)


def server_config(server: Server) -> UpstreamConfig:
    headers: tuple[tuple[str, str], ...] = ()
    if server.credential_encrypted:
        secret = decrypt(server.credential_encrypted)
        if server.credential_kind == Server.CredentialKind.BEARER:
            headers = (("Authorization", f"Bearer {secret}"),)
        elif server.credential_kind == Server.CredentialKind.HEADER:
            headers = ((server.credential_header, secret),)
    return UpstreamConfig(
        server_id=server.pk,
        slug=server.slug,
        url=server.url,
        headers=headers,
        timeout=float(server.timeout_seconds),
        stamp=server.updated_at.isoformat(),
        max_reply_bytes=settings.GATEWAY_MAX_UPSTREAM_REPLY_BYTES,
        max_list_bytes=settings.GATEWAY_MAX_TOOLS_LIST_BYTES,
        max_list_tools=settings.GATEWAY_MAX_TOOLS_PER_SERVER,
    )


_local: dict[int, tuple[int, dict[str, ServerEntry]]] = {}
_local_lock = threading.Lock()


def servers(workspace_id: int, current: int | None = None) -> dict[str, ServerEntry]:
    """The enabled servers of a workspace by slug, from this process's memory while the version holds."""
    current = version(workspace_id) if current is None else current
    cached = _local.get(workspace_id)
    if cached is not None and cached[0] == current:
        return cached[1]
    entries: dict[str, ServerEntry] = {}
    for server in Server.objects.filter(workspace_id=workspace_id, enabled=True).order_by("slug"):
        try:
            config: UpstreamConfig | None = server_config(server)
            problem = ""
        except CredentialUnreadable as exc:
            config, problem = None, str(exc)
        entries[server.slug] = ServerEntry(
            id=server.pk,
            slug=server.slug,
            name=server.name,
            config=config,
            disabled_tools=frozenset(server.disabled_tools or []),
            problem=problem,
        )
    with _local_lock:
        _local[workspace_id] = (current, entries)
    return entries


# -- fetching one upstream's tools ---------------------------------------------------------------------------
# No shared pool: each fetch runs on a thread of its own, and at most one fetch per server (and configuration)
# runs in a process at a time; a rebuild that finds one running joins it. A hung upstream therefore holds one
# thread (until its own timeout) and nothing that another server or workspace needs.


@dataclass
class _Fetch:
    future: Future[list[dict[str, Any]]]
    started: float  # time.monotonic()
    counted: bool = False  # its failure is already in the breaker (it missed a list deadline)


_fetches: dict[tuple[int, str], _Fetch] = {}
_fetches_lock = threading.Lock()


def _fetch(entry: ServerEntry) -> tuple[_Fetch, bool]:
    """The running fetch of ``entry``'s tools, or a new one on a thread of its own (True when new)."""
    assert entry.config is not None
    key = (entry.id, entry.config.stamp)
    with _fetches_lock:
        running = _fetches.get(key)
        if running is not None:
            return running, False
        fetch = _fetches[key] = _Fetch(Future(), time.monotonic())
    # The fetch thread records its outcome through the caller's cache connection (Django's are per thread).
    store = caches["default"]
    thread = threading.Thread(
        target=_run_fetch, args=(entry, key, fetch, store), name=f"aerostack-fetch-{entry.slug}", daemon=True
    )
    thread.start()
    return fetch, True


def _run_fetch(entry: ServerEntry, key: tuple[int, str], fetch: _Fetch, store: BaseCache) -> None:
    assert entry.config is not None
    try:
        tools = session_for(entry.config).list_tools()
    except BaseException as exc:  # handed to the waiting rebuild; one broken upstream breaks nothing else
        with _fetches_lock:
            _fetches.pop(key, None)
            counted, fetch.counted = fetch.counted, True
        if not counted:
            reason = exc.message if isinstance(exc, UpstreamError) else "internal error"
            breaker.failed(entry, reason, store=store)
        fetch.future.set_exception(exc)
    else:
        with _fetches_lock:
            _fetches.pop(key, None)
        breaker.succeeded(entry, store=store)
        fetch.future.set_result(tools)


def _build(workspace_id: int) -> ToolList:
    entries = servers(workspace_id)
    deadline_seconds = settings.GATEWAY_LIST_DEADLINE_SECONDS
    failures: dict[str, str] = {}
    waiting: dict[str, _Fetch] = {}
    skipped = breaker.skipped(entries)
    for slug, entry in entries.items():
        if entry.config is None:
            failures[slug] = entry.problem
        elif slug in skipped:
            failures[slug] = skipped[slug]
        else:
            fetch, new = _fetch(entry)
            overdue = time.monotonic() - fetch.started
            if not new and overdue > deadline_seconds:
                # Still busy with a list asked for by an earlier rebuild: not worth waiting for again.
                # A stable text (no growing age): the Servers tab's row is written only when it changes.
                failures[slug] = f"has not answered a tools/list sent more than {deadline_seconds}s ago"
            else:
                waiting[slug] = fetch
    # One deadline for the whole list: a slow upstream is left out rather than holding the caller.
    wait([fetch.future for fetch in waiting.values()], timeout=deadline_seconds)
    fetched: dict[str, list[dict[str, Any]]] = {}
    for slug, fetch in waiting.items():
        if not fetch.future.done():
            failures[slug] = f"did not list its tools within {deadline_seconds}s"
            logger.warning("upstream %s left out of tools/list: too slow", slug)
            with _fetches_lock:
                counted, fetch.counted = fetch.counted, True
            if not counted:
                breaker.failed(entries[slug], failures[slug])
            continue
        exc = fetch.future.exception()
        if exc is None:
            fetched[slug] = fetch.future.result()
        elif isinstance(exc, UpstreamError):
            failures[slug] = exc.message
            logger.warning("upstream %s left out of tools/list: %s", slug, exc.message)
        else:  # one broken upstream must never break the list for the others
            failures[slug] = "internal error"
            logger.error("upstream %s failed in tools/list", slug, exc_info=exc)
    pairs = [
        (slug, tool["name"])
        for slug, tools in fetched.items()
        for tool in tools
        if tool["name"] not in entries[slug].disabled_tools
    ]
    definitions = {(slug, tool["name"]): tool for slug, tools in fetched.items() for tool in tools}
    exposed = protocol.build_tool_names(pairs)
    tools = [{**definitions[(item.server_slug, item.original_name)], "name": item.name} for item in exposed]
    _record_health(entries, fetched, failures)
    return ToolList(
        tools_json=json.dumps(tools, separators=(",", ":")).encode("utf-8"),
        routes=protocol.tool_reverse_map(exposed),
        failures=failures,
        expires_at=0.0,
    )


def tool_snapshot(tools: list[dict[str, Any]]) -> list[dict[str, str]]:
    """What the Servers tab keeps of an upstream's tools: names and (shortened) descriptions."""
    return [{"name": t["name"], "description": str(t.get("description") or "")[:500]} for t in tools]


def _record_health(
    entries: dict[str, ServerEntry], fetched: dict[str, list[dict[str, Any]]], failures: dict[str, str]
) -> None:
    """Keep each server's status and tool snapshot for the Servers tab; writes only what changed.

    ``update()`` leaves ``updated_at`` alone: the catalog version must not move because of a health check.
    """
    now = timezone.now()
    for slug, entry in entries.items():
        if slug in fetched:
            snapshot = tool_snapshot(fetched[slug])
            Server.objects.filter(pk=entry.id).exclude(tools_snapshot=snapshot, last_error="").update(
                tools_snapshot=snapshot, last_error="", last_checked_at=now
            )
        elif slug in failures:
            Server.objects.filter(pk=entry.id).exclude(last_error=failures[slug][:1000]).update(
                last_error=failures[slug][:1000], last_checked_at=now
            )


# -- the merged list, pre-encoded ----------------------------------------------------------------------------
# The list is kept in the shared cache as the JSON bytes of its ``tools`` array (so no node unpickles a
# thousand dicts or encodes them again per request) and, in each process, as a ToolList for the current
# catalog version until the shared entry expires. A cached tools/list then costs splicing the request id into
# ready bytes; a version bump still reaches every node at once, because the version is read per request.

_lists: dict[int, tuple[int, ToolList]] = {}


def _list_key(workspace_id: int, current: int) -> str:
    return f"gw:tool-list:{workspace_id}:{current}"


def _from_cache(value: Any) -> ToolList | None:
    if not isinstance(value, dict) or not isinstance(value.get("tools_json"), bytes):
        return None  # absent, or written by an older release
    try:
        listed = ToolList(**value)
    except TypeError:
        return None  # written by another release with other fields: rebuild rather than fail
    return listed if listed.expires_at > time.time() else None


def tool_list(workspace_id: int, *, refresh: bool = False, current: int | None = None) -> ToolList:
    """The merged tool list: from this process's memory, else the shared cache, else built (once).

    When the list of the current version has only expired (no change: the version is the same) and another
    request is rebuilding it, the expired list is served meanwhile: only the rebuilding request waits for the
    workspace's upstreams, not every client of the workspace.
    """
    current = version(workspace_id) if current is None else int(current)
    if not settings.GATEWAY_TOOLS_CACHE_SECONDS:
        return _build(workspace_id)
    stale: ToolList | None = None
    if not refresh:
        local = _lists.get(workspace_id)
        if local is not None and local[0] == current:
            if local[1].expires_at > time.time():
                return local[1]
            stale = local[1]
    key = _list_key(workspace_id, current)
    flight = f"{workspace_id}:{current}"
    listed = None if refresh else _from_cache(cache.get(key))
    if listed is None:
        if stale is not None and single_flight.running(flight):
            return stale
        listed = single_flight.run(
            flight,
            lambda: _rebuild(workspace_id, key, refresh=refresh, stale=stale),
            wait_seconds=settings.GATEWAY_LIST_DEADLINE_SECONDS + 5,
        )
    with _local_lock:
        _lists[workspace_id] = (current, listed)
    return listed


def _rebuild(workspace_id: int, key: str, *, refresh: bool, stale: ToolList | None) -> ToolList:
    """Build the list and share it; one build per catalog version across nodes (a lease in the shared cache),
    so that N nodes do not ask every upstream N times. A node that finds the lease taken serves its expired
    copy if it has one, else waits for the other node's list (bounded by the list deadline), then builds
    itself if none came (that node may have died)."""
    lease = f"{key}:building"
    deadline_seconds = settings.GATEWAY_LIST_DEADLINE_SECONDS
    owned = refresh or cache.add(lease, 1, deadline_seconds + 5)
    if not owned:
        if stale is not None:
            return stale
        give_up = time.monotonic() + deadline_seconds + 2
        while time.monotonic() < give_up:
            time.sleep(REBUILD_POLL_SECONDS)
            listed = _from_cache(cache.get(key))
            if listed is not None:
                return listed
    try:
        built = _build(workspace_id)
        # A list with an upstream missing is kept only briefly, so that the upstream is tried again soon, but
        # a burst of calls for its tools does not knock on every upstream again each time.
        ttl = settings.GATEWAY_TOOLS_CACHE_SECONDS
        if built.failures:
            ttl = min(ttl, FAILED_LIST_CACHE_SECONDS)
        listed = replace(built, expires_at=time.time() + ttl)
        cache.set(key, asdict(listed), ttl)
        return listed
    finally:
        if owned:
            cache.delete(lease)


def route(workspace_id: int, exposed_name: str, current: int | None = None) -> Route | None:
    """Where a ``tools/call`` for ``exposed_name`` goes, or None for an unknown or switched-off tool.

    The name map comes with the tool list, which this process keeps for the current catalog version, so a
    call usually costs no cache read for it at all.
    """
    current = version(workspace_id) if current is None else int(current)
    entries = servers(workspace_id, current)
    target = tool_list(workspace_id, current=current).routes.get(exposed_name)
    if target is None:
        return None
    entry = entries.get(target[0])
    if entry is None or target[1] in entry.disabled_tools:
        return None
    return Route(server=entry, tool=target[1])


# -- per-token scopes ----------------------------------------------------------------------------------------
# The shared list stays one per workspace; a scoped token gets a cut of it, encoded once per (shared list,
# scope) in each process, so a scoped tools/list is the same splice of ready bytes as an unscoped one.
_scoped: dict[tuple[int, str], tuple[ToolList, ToolList]] = {}
SCOPED_LISTS_KEPT = 1024  # (workspace, scope) pairs per process; the store starts afresh beyond it


def scoped_tool_list(
    workspace_id: int, scopes: token_scopes.StoredScopes | None, *, current: int | None = None
) -> ToolList:
    """``tool_list`` as a token with ``scopes`` sees it: only the tools its allow-list names (see
    ``tokens.scopes``), and the routes and failures of those only. ``None`` is the whole list."""
    current = version(workspace_id) if current is None else int(current)
    listed = tool_list(workspace_id, current=current)
    if scopes is None:
        return listed
    key = (workspace_id, token_scopes.digest(scopes))
    kept = _scoped.get(key)
    if kept is not None and kept[0] is listed:
        return kept[1]
    ids = {slug: entry.id for slug, entry in servers(workspace_id, current).items()}
    routes = {
        name: (slug, tool)
        for name, (slug, tool) in listed.routes.items()
        if slug in ids and token_scopes.allows(scopes, ids[slug], tool)
    }
    tools = [tool for tool in listed.tools if tool["name"] in routes]
    cut = replace(
        listed,
        tools_json=json.dumps(tools, separators=(",", ":")).encode("utf-8"),
        routes=routes,
        failures={
            slug: why
            for slug, why in listed.failures.items()
            if slug in ids and token_scopes.allows_server(scopes, ids[slug])
        },
    )
    with _local_lock:
        if len(_scoped) >= SCOPED_LISTS_KEPT:
            _scoped.clear()
        _scoped[key] = (listed, cut)
    return cut
