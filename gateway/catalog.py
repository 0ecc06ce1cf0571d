"""What a workspace's gateway offers: its enabled upstream servers and their merged tool list.

A workspace's catalog has a version number kept in the shared cache. Every change to a server or a tool
setting bumps it (``invalidate``), on every node at once; each process keeps the server configurations of the
current version in memory, so routing a ``tools/call`` costs one small cache read, not a database query.
The merged tool list is kept in the shared cache for ``GATEWAY_TOOLS_CACHE_SECONDS`` under that version.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections
from django.utils import timezone

from gateway import protocol
from gateway.crypto import CredentialUnreadable, decrypt
from gateway.models import Server
from gateway.upstream import UpstreamConfig, UpstreamError, session_for

logger = logging.getLogger(__name__)

FAILED_LIST_CACHE_SECONDS = 5
# How long tools/list waits for all upstreams together. Upstream fetches run on a shared pool of threads,
# so this also bounds how long one workspace's slow upstreams can occupy it for everyone else.
LIST_DEADLINE_SECONDS = 15
_executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="aerostack-upstream")


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
    tools: list[dict[str, Any]]
    routes: dict[str, tuple[str, str]]  # exposed name -> (server slug, upstream tool name)
    failures: dict[str, str]  # server slug -> why it was left out


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


def invalidate(workspace_id: int) -> None:
    """Call after any change to a workspace's servers or tool settings: every node sees it at once."""
    try:
        cache.incr(version_key(workspace_id))
    except ValueError:
        version(workspace_id)


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


def _fetch(entry: ServerEntry) -> list[dict[str, Any]]:
    if entry.config is None:
        raise UpstreamError("config", entry.problem)
    try:
        return session_for(entry.config).list_tools()
    finally:
        close_old_connections()


def _build(workspace_id: int) -> ToolList:
    entries = servers(workspace_id)
    futures = {slug: _executor.submit(_fetch, entry) for slug, entry in entries.items()}
    fetched: dict[str, list[dict[str, Any]]] = {}
    failures: dict[str, str] = {}
    # One deadline for the whole list: a slow upstream is left out rather than holding the caller.
    deadline = time.monotonic() + LIST_DEADLINE_SECONDS
    for slug, future in futures.items():
        try:
            fetched[slug] = future.result(timeout=max(deadline - time.monotonic(), 0))
        except FutureTimeout:
            failures[slug] = f"did not list its tools within {LIST_DEADLINE_SECONDS}s"
            logger.warning("upstream %s left out of tools/list: too slow", slug)
        except UpstreamError as exc:
            failures[slug] = exc.message
            logger.warning("upstream %s left out of tools/list: %s", slug, exc.message)
        except Exception as exc:  # one broken upstream must never break the list for the others
            failures[slug] = "internal error"
            logger.exception("upstream %s failed in tools/list", slug, exc_info=exc)
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
    return ToolList(tools=tools, routes=protocol.tool_reverse_map(exposed), failures=failures)


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


def tool_list(workspace_id: int, *, refresh: bool = False, current: int | None = None) -> ToolList:
    """The merged tool list, from the shared cache when fresh."""
    key = f"gw:tools:{workspace_id}:{version(workspace_id) if current is None else current}"
    if not refresh and settings.GATEWAY_TOOLS_CACHE_SECONDS:
        cached = cache.get(key)
        if cached is not None:
            return ToolList(**cached)
    built = _build(workspace_id)
    if settings.GATEWAY_TOOLS_CACHE_SECONDS:
        # A list with an upstream missing is kept only briefly, so that the upstream is tried again soon, but
        # a burst of calls for its tools does not knock on every upstream again each time.
        ttl = settings.GATEWAY_TOOLS_CACHE_SECONDS
        if built.failures:
            ttl = min(ttl, FAILED_LIST_CACHE_SECONDS)
        cache.set(key, {"tools": built.tools, "routes": built.routes, "failures": built.failures}, ttl)
    return built


_routes: dict[int, tuple[int, dict[str, tuple[str, str]]]] = {}


def route(workspace_id: int, exposed_name: str, current: int | None = None) -> Route | None:
    """Where a ``tools/call`` for ``exposed_name`` goes, or None for an unknown or switched-off tool.

    The name map is kept in this process for the current catalog version, so a call usually costs no
    tool-list fetch at all; an unknown name refreshes it once (an upstream may have added a tool).
    """
    current = version(workspace_id) if current is None else int(current)
    entries = servers(workspace_id, current)
    cached = _routes.get(workspace_id)
    routes = cached[1] if cached is not None and cached[0] == current else None
    if routes is None or exposed_name not in routes:
        routes = tool_list(workspace_id, current=current).routes
        with _local_lock:
            _routes[workspace_id] = (current, routes)
    target = routes.get(exposed_name)
    if target is None:
        return None
    entry = entries.get(target[0])
    if entry is None or target[1] in entry.disabled_tools:
        return None
    return Route(server=entry, tool=target[1])
