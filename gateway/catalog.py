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
from collections.abc import Callable, Iterable
from concurrent.futures import Future, wait
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Any, TypeVar, cast

from django.conf import settings
from django.core.cache import BaseCache, cache, caches
from django.utils import timezone

from gateway import breaker, live, protocol, secret_urls, single_flight
from gateway.crypto import CredentialUnreadable, decrypt
from gateway.models import Server
from gateway.upstream import UpstreamConfig, UpstreamError, session_for
from tokens import scopes as token_scopes

logger = logging.getLogger(__name__)
T = TypeVar("T")

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
    expose_names: bool = False  # its tools, prompts and resources keep their upstream names


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


def invalidate(
    workspace_id: int, lists: Iterable[str] = live.LISTS, *, servers: Iterable[int] | None = None
) -> None:
    """Call after any change to a workspace's servers or tool settings: every node sees it at once, and
    every open client stream of the workspace is told that ``lists`` changed (once the transaction, if any,
    has committed: gateway/live.py). ``servers``: the servers whose items changed, when that is known (a
    stream whose token's scope shows none of them is not told)."""
    try:
        current: int | None = cache.incr(version_key(workspace_id))
    except ValueError:
        current = version(workspace_id)
    live.lists_changed(workspace_id, lists, current, servers=servers)


def upstream_list_changed(server_id: int, name: str, workspaces: Iterable[int] = ()) -> None:
    """An upstream announced a new list ``name`` on its own stream (gateway/standalone.py's GET stream,
    gateway/uplisten.py's listen stream): every node rebuilds it for ``workspaces``, or, when none is known,
    for the server's own workspace (from the database). Called from those readers' threads, which keep no
    database connection (nor a pooled one): this thread's is closed after."""
    from django.db import connection

    try:
        found = set(workspaces) or set(
            Server.objects.filter(pk=server_id).values_list("workspace_id", flat=True)
        )
        for workspace_id in found:
            invalidate(workspace_id, lists=[name], servers=[server_id])
    finally:
        if not connection.in_atomic_block:
            connection.close()


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
        url=server.decrypt_url(),
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
            expose_names=server.expose_names,
        )
    with _local_lock:
        _local[workspace_id] = (current, entries)
    return entries


# -- fetching one upstream's lists ---------------------------------------------------------------------------
# No shared pool: each fetch runs on a thread of its own, and at most one fetch per server (configuration and
# kind of list) runs in a process at a time; a rebuild that finds one running joins it. A hung upstream
# therefore holds one thread (until its own timeout) and nothing that another server or workspace needs.
# Two kinds: "tools" (``tools/list``) and "features" (its resources, resource templates and prompts, see
# ``UpstreamSession.list_features``). Only tool lists count for the breaker: a server whose resources fail
# but whose tools work must keep its tools.

TOOLS = "tools"
FEATURES = "features"
_WHAT = {TOOLS: "its tools", FEATURES: "its resources and prompts"}
_METHOD = {TOOLS: "tools/list", FEATURES: "resources/list or prompts/list"}


@dataclass
class _Fetch:
    future: Future[Any]
    started: float  # time.monotonic()
    counted: bool = False  # its failure is already in the breaker (it missed a list deadline)


_fetches: dict[tuple[int, str, str], _Fetch] = {}
_fetches_lock = threading.Lock()


def _fetch(entry: ServerEntry, kind: str = TOOLS) -> tuple[_Fetch, bool]:
    """The running fetch of ``entry``'s list of ``kind``, or a new one on a thread of its own (True: new)."""
    assert entry.config is not None
    key = (entry.id, entry.config.stamp, kind)
    with _fetches_lock:
        running = _fetches.get(key)
        if running is not None:
            return running, False
        fetch = _fetches[key] = _Fetch(Future(), time.monotonic())
    # The fetch thread records its outcome through the caller's cache connection (Django's are per thread).
    store = caches["default"]
    thread = threading.Thread(
        target=_run_fetch,
        args=(entry, key, fetch, store),
        name=f"aerostack-fetch-{entry.slug}-{kind}",
        daemon=True,
    )
    thread.start()
    return fetch, True


def _run_fetch(entry: ServerEntry, key: tuple[int, str, str], fetch: _Fetch, store: BaseCache) -> None:
    assert entry.config is not None
    kind = key[2]
    try:
        session = session_for(entry.config)
        result: Any = session.list_tools() if kind == TOOLS else session.list_features()
    except BaseException as exc:  # handed to the waiting rebuild; one broken upstream breaks nothing else
        with _fetches_lock:
            _fetches.pop(key, None)
            counted, fetch.counted = fetch.counted, True
        if not counted and kind == TOOLS:
            reason = exc.message if isinstance(exc, UpstreamError) else "internal error"
            breaker.failed(entry, reason, store=store)
        fetch.future.set_exception(exc)
    else:
        with _fetches_lock:
            _fetches.pop(key, None)
        if kind == TOOLS:
            breaker.succeeded(entry, store=store)
        fetch.future.set_result(result)


def _gather(entries: dict[str, ServerEntry], kind: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Fetch the list of ``kind`` of every server in parallel, waiting at most the list deadline: what came
    (by slug) and why each other server is left out."""
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
            fetch, new = _fetch(entry, kind)
            overdue = time.monotonic() - fetch.started
            if not new and overdue > deadline_seconds:
                # Still busy with a list asked for by an earlier rebuild: not worth waiting for again.
                # A stable text (no growing age): the Servers tab's row is written only when it changes.
                failures[slug] = f"has not answered a {_METHOD[kind]} sent more than {deadline_seconds}s ago"
            else:
                waiting[slug] = fetch
    # One deadline for the whole list: a slow upstream is left out rather than holding the caller.
    wait([fetch.future for fetch in waiting.values()], timeout=deadline_seconds)
    fetched: dict[str, Any] = {}
    for slug, fetch in waiting.items():
        if not fetch.future.done():
            failures[slug] = f"did not list {_WHAT[kind]} within {deadline_seconds}s"
            logger.warning("upstream %s left out of %s: too slow", slug, _METHOD[kind])
            with _fetches_lock:
                counted, fetch.counted = fetch.counted, True
            if not counted and kind == TOOLS:
                breaker.failed(entries[slug], failures[slug])
            continue
        exc = fetch.future.exception()
        if exc is None:
            fetched[slug] = fetch.future.result()
        elif isinstance(exc, UpstreamError):
            # Shown in the Servers tab and to gateway clients: never with the URL's secret pieces.
            config = entries[slug].config
            failures[slug] = secret_urls.scrub(exc.message, config.url) if config else exc.message
            logger.warning("upstream %s left out of %s: %s", slug, _METHOD[kind], failures[slug])
        else:  # one broken upstream must never break the list for the others
            failures[slug] = "internal error"
            logger.error("upstream %s failed in %s", slug, _METHOD[kind], exc_info=exc)
    return fetched, failures


def verbatim_ranks(entries: dict[str, ServerEntry]) -> dict[str, int]:
    """The servers that expose their names as they are, by slug, ranked by id (the one added first wins)."""
    return {slug: entry.id for slug, entry in entries.items() if entry.expose_names}


def _build(workspace_id: int) -> ToolList:
    entries = servers(workspace_id)
    fetched, failures = _gather(entries, TOOLS)
    pairs = [
        (slug, tool["name"])
        for slug, tools in fetched.items()
        for tool in tools
        if tool["name"] not in entries[slug].disabled_tools
    ]
    definitions = {(slug, tool["name"]): tool for slug, tools in fetched.items() for tool in tools}
    exposed, conflicts = protocol.build_exposed_names(pairs, verbatim_ranks(entries))
    tools = [{**definitions[(item.server_slug, item.original_name)], "name": item.name} for item in exposed]
    _record_health(entries, fetched, failures, conflicts)
    return ToolList(
        tools_json=json.dumps(tools, separators=(",", ":")).encode("utf-8"),
        routes=protocol.tool_reverse_map(exposed),
        failures=failures,
        expires_at=0.0,
    )


def tool_snapshot(tools: list[dict[str, Any]]) -> list[dict[str, str]]:
    """What the Servers tab keeps of an upstream's tools: names and (shortened) descriptions."""
    return [{"name": t["name"], "description": str(t.get("description") or "")[:500]} for t in tools]


def conflict_lines(conflicts: list[protocol.NameConflict], slug: str, what: str) -> list[dict[str, str]]:
    """What the Servers tab keeps of ``slug``'s items that could not keep their own names (``Server.
    all_conflicts`` words them)."""
    return [
        {"what": what, "name": c.original, "reason": c.reason} for c in conflicts if c.server_slug == slug
    ]


def _record_health(
    entries: dict[str, ServerEntry],
    fetched: dict[str, list[dict[str, Any]]],
    failures: dict[str, str],
    conflicts: list[protocol.NameConflict] | None = None,
) -> None:
    """Keep each server's status and tool snapshot for the Servers tab; writes only what changed.

    ``update()`` leaves ``updated_at`` alone: the catalog version must not move because of a health check.
    """
    now = timezone.now()
    for slug, entry in entries.items():
        if slug in fetched:
            snapshot = tool_snapshot(fetched[slug])
            clashes = conflict_lines(conflicts or [], slug, "Tool")
            Server.objects.filter(pk=entry.id).exclude(
                tools_snapshot=snapshot, last_error="", name_conflicts=clashes
            ).update(tools_snapshot=snapshot, last_error="", last_checked_at=now, name_conflicts=clashes)
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
    return _decoded(ToolList, "tools_json", value)


def _decoded(cls: type[T], check: str, value: Any) -> T | None:
    if not isinstance(value, dict) or not isinstance(value.get(check), bytes):
        return None  # absent, or written by an older release
    try:
        listed = cls(**value)
    except TypeError:
        return None  # written by another release with other fields: rebuild rather than fail
    return listed if listed.expires_at > time.time() else None  # type: ignore[attr-defined]


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
    listed = _shared(
        _list_key(workspace_id, current),
        f"{workspace_id}:{current}",
        lambda: _build(workspace_id),
        _from_cache,
        refresh=refresh,
        stale=stale,
    )
    with _local_lock:
        _lists[workspace_id] = (current, listed)
    return listed


def _shared(
    key: str,
    flight: str,
    build: Callable[[], T],
    decode: Callable[[Any], T | None],
    *,
    refresh: bool,
    stale: T | None,
) -> T:
    """A list from the shared cache under ``key``, else built once per process (``single_flight``) and node
    (``_rebuild``); the expired ``stale`` copy is served while another request rebuilds it."""
    listed = None if refresh else decode(cache.get(key))
    if listed is None:
        if stale is not None and single_flight.running(flight):
            return stale
        listed = single_flight.run(
            flight,
            lambda: _rebuild(key, build, decode, refresh=refresh, stale=stale),
            wait_seconds=settings.GATEWAY_LIST_DEADLINE_SECONDS + 5,
        )
    return listed


def _rebuild(
    key: str, build: Callable[[], T], decode: Callable[[Any], T | None], *, refresh: bool, stale: T | None
) -> T:
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
            listed = decode(cache.get(key))
            if listed is not None:
                return listed
    try:
        built = build()
        # A list with an upstream missing is kept only briefly, so that the upstream is tried again soon, but
        # a burst of calls for its tools does not knock on every upstream again each time.
        ttl = settings.GATEWAY_TOOLS_CACHE_SECONDS
        if built.failures:  # type: ignore[attr-defined]
            ttl = min(ttl, FAILED_LIST_CACHE_SECONDS)
        listed = replace(built, expires_at=time.time() + ttl)  # type: ignore[type-var]
        cache.set(key, asdict(listed), ttl)  # type: ignore[call-overload]
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


# -- resources, resource templates and prompts ---------------------------------------------------------------
# Built like the tool list (parallel fan-out on threads of their own, every page drained, one build per
# catalog version per process and node, the shared cache, an upstream that is down left out) but apart from
# it and only when a client asks: tools/list and tools/call never wait for these lists.


@dataclass(frozen=True)
class FeatureList:
    prompts_json: bytes  # the merged ``prompts`` array, as sent
    resources_json: bytes  # the merged ``resources`` array
    templates_json: bytes  # the merged ``resourceTemplates`` array
    prompts: dict[str, tuple[str, str]]  # exposed name -> (server slug, upstream prompt name)
    resources: dict[str, tuple[str, str]]  # exposed URI -> (server slug, upstream URI)
    templates: dict[str, tuple[str, str]]  # exposed URI template -> (server slug, upstream URI template)
    offers: dict[str, dict[str, bool]]  # server slug -> what its initialize declared (see list_features)
    failures: dict[str, str]  # server slug -> why it was left out
    expires_at: float

    def result_json(self, method: str, request_id: protocol.RequestId) -> bytes:
        """The JSON-RPC response to ``method`` (prompts/list, resources/list, resources/templates/list)."""
        field, items = {
            "prompts/list": ("prompts", self.prompts_json),
            "resources/list": ("resources", self.resources_json),
            "resources/templates/list": ("resourceTemplates", self.templates_json),
        }[method]
        return b"".join(
            (
                _RESULT_HEAD,
                json.dumps(request_id).encode("ascii"),
                b',"result":{"',
                field.encode(),
                b'":',
                items,
                b"}}",
            )
        )

    def upstream_uri(self, uri: str) -> tuple[str, str] | None:
        """(server slug, upstream URI) of a URI a client sends that is not in the gateway's scheme: one this
        list holds (a server exposing its names as they are, or another server's own URI that exactly one
        server lists, as tool results' resource links carry them), else the one server with a template
        that the URI fits. None when no server or several could own it."""
        target = self.resources.get(uri)
        if target is not None:
            return target
        owners = {slug for slug, original in self.resources.values() if original == uri}
        if not owners:
            owners = {
                slug for slug, original in self.templates.values() if protocol.matches_template(original, uri)
            }
        return (owners.pop(), uri) if len(owners) == 1 else None


def _feature_list_from_cache(value: Any) -> FeatureList | None:
    return _decoded(FeatureList, "prompts_json", value)


def _encode(items: list[dict[str, Any]]) -> bytes:
    return json.dumps(items, separators=(",", ":")).encode("utf-8")


def _build_features(workspace_id: int) -> FeatureList:
    entries = servers(workspace_id)
    fetched, failures = _gather(entries, FEATURES)
    ranks = verbatim_ranks(entries)
    lists = {slug: got["lists"] for slug, got in fetched.items()}

    def items(field: str, key: str) -> dict[tuple[str, str], dict[str, Any]]:
        return {(slug, item[key]): item for slug, got in lists.items() for item in got.get(field, [])}

    prompt_items = items("prompts", "name")
    resource_items = items("resources", "uri")
    template_items = items("resourceTemplates", "uriTemplate")
    prompts, prompt_conflicts = protocol.build_exposed_names(prompt_items, ranks)
    resources, resource_conflicts = protocol.build_exposed_uris(resource_items, ranks)
    templates, template_conflicts = protocol.build_exposed_uris(template_items, ranks)
    conflicts = {
        "Prompt": prompt_conflicts,
        "Resource": resource_conflicts,
        "Resource template": template_conflicts,
    }
    for slug, got in fetched.items():
        _record_features(
            entries[slug],
            got,
            [line for what, found in conflicts.items() for line in conflict_lines(found, slug, what)],
        )
    return FeatureList(
        prompts_json=_encode(
            [{**prompt_items[(p.server_slug, p.original_name)], "name": p.name} for p in prompts]
        ),
        resources_json=_encode(
            [{**resource_items[(r.server_slug, r.original)], "uri": r.uri} for r in resources]
        ),
        templates_json=_encode(
            [{**template_items[(t.server_slug, t.original)], "uriTemplate": t.uri} for t in templates]
        ),
        prompts={p.name: (p.server_slug, p.original_name) for p in prompts},
        resources={r.uri: (r.server_slug, r.original) for r in resources},
        templates={t.uri: (t.server_slug, t.original) for t in templates},
        offers={slug: dict(got["offers"]) for slug, got in fetched.items()},
        failures=failures,
        expires_at=0.0,
    )


def features_snapshot(got: dict[str, Any], conflicts: list[dict[str, str]]) -> dict[str, Any]:
    """What the Servers tab (and the collision check of ``server_validate``) keeps of a server's resources,
    resource templates and prompts: their upstream names and URIs, what it offers, what went wrong."""
    lists = got["lists"]

    def text(value: object, limit: int = 300) -> str:
        return str(value or "")[:limit]

    return {
        "offers": dict(got["offers"]),
        "prompts": [
            {"name": p["name"], "description": text(p.get("description"))} for p in lists.get("prompts", [])
        ],
        "resources": [
            {"uri": r["uri"], "name": text(r.get("name"), 200)} for r in lists.get("resources", [])
        ],
        "resource_templates": [
            {"uriTemplate": t["uriTemplate"], "name": text(t.get("name"), 200)}
            for t in lists.get("resourceTemplates", [])
        ],
        "problems": dict(got["problems"]),
        "conflicts": conflicts,
    }


def _record_features(entry: ServerEntry, got: dict[str, Any], conflicts: list[dict[str, str]]) -> None:
    snapshot = features_snapshot(got, conflicts)
    Server.objects.filter(pk=entry.id).exclude(features_snapshot=snapshot).update(features_snapshot=snapshot)


_feature_lists: dict[int, tuple[int, FeatureList]] = {}


def feature_list(workspace_id: int, *, refresh: bool = False, current: int | None = None) -> FeatureList:
    """The merged resources, resource templates and prompts: as ``tool_list``, from this process's memory,
    else the shared cache, else built once."""
    current = version(workspace_id) if current is None else int(current)
    if not settings.GATEWAY_TOOLS_CACHE_SECONDS:
        return _build_features(workspace_id)
    stale: FeatureList | None = None
    if not refresh:
        local = _feature_lists.get(workspace_id)
        if local is not None and local[0] == current:
            if local[1].expires_at > time.time():
                return local[1]
            stale = local[1]
    listed = _shared(
        f"gw:feature-list:{workspace_id}:{current}",
        f"features:{workspace_id}:{current}",
        lambda: _build_features(workspace_id),
        _feature_list_from_cache,
        refresh=refresh,
        stale=stale,
    )
    with _local_lock:
        _feature_lists[workspace_id] = (current, listed)
    return listed


_scoped_features: dict[tuple[int, str], tuple[FeatureList, FeatureList]] = {}


def scoped_feature_list(
    workspace_id: int, scopes: token_scopes.StoredScopes | None, *, current: int | None = None
) -> FeatureList:
    """``feature_list`` as a token with ``scopes`` sees it: the resources, templates and prompts of the
    servers it may use whole (``tokens.scopes.allows_whole_server``). ``None`` is the whole list."""
    current = version(workspace_id) if current is None else int(current)
    listed = feature_list(workspace_id, current=current)
    if scopes is None:
        return listed
    key = (workspace_id, token_scopes.digest(scopes))
    kept = _scoped_features.get(key)
    if kept is not None and kept[0] is listed:
        return kept[1]
    ids = {slug: entry.id for slug, entry in servers(workspace_id, current).items()}
    allowed = {slug for slug, server_id in ids.items() if token_scopes.allows_whole_server(scopes, server_id)}

    def cut(routes: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
        return {name: target for name, target in routes.items() if target[0] in allowed}

    def cut_json(items_json: bytes, key: str, routes: dict[str, tuple[str, str]]) -> bytes:
        return _encode([item for item in json.loads(items_json) if item[key] in routes])

    prompts, resources, templates = cut(listed.prompts), cut(listed.resources), cut(listed.templates)
    scoped = replace(
        listed,
        prompts_json=cut_json(listed.prompts_json, "name", prompts),
        resources_json=cut_json(listed.resources_json, "uri", resources),
        templates_json=cut_json(listed.templates_json, "uriTemplate", templates),
        prompts=prompts,
        resources=resources,
        templates=templates,
        offers={slug: offers for slug, offers in listed.offers.items() if slug in allowed},
        failures={slug: why for slug, why in listed.failures.items() if slug in allowed},
    )
    with _local_lock:
        if len(_scoped_features) >= SCOPED_LISTS_KEPT:
            _scoped_features.clear()
        _scoped_features[key] = (listed, scoped)
    return scoped
