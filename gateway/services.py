"""Writes on upstream servers. Each one is audited in its own transaction and refreshes the catalog of
the workspace on every node (``catalog.invalidate``).

The rules of a server's fields live here (``server_validate``), so the dashboard form, a REST API and a CLI
share them: the form only parses. Refused input raises ``ServerInvalid`` with a message per field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from gateway import catalog, protocol, secret_urls, upstream
from gateway.crypto import CredentialUnreadable, encrypt
from gateway.models import SERVER_SLUG_VALIDATOR, Server
from gateway.netguard import UpstreamAddressRefused, check_upstream_url
from workspaces.models import Workspace
from workspaces.services import audit_record

SERVER_FIELDS = (
    "name",
    "slug",
    "url",
    "credential_kind",
    "credential_header",
    "timeout_seconds",
    "expose_names",
)
COLLISIONS_SHOWN = 5
NAME_MAX_LENGTH = 100
SLUG_MAX_LENGTH = 32
URL_MAX_LENGTH = 500
HEADER_MAX_LENGTH = 100
CREDENTIAL_MAX_LENGTH = 4000
TIMEOUT_MAX_SECONDS = 600
# RFC 9110 "token": the characters a header field name may use.
HEADER_NAME_PATTERN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Headers the gateway sets itself for the MCP transport, or that frame the HTTP message: a credential in
# one of them would break every request to the upstream (or smuggle a second one), so they are refused.
RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "Host",
        "Content-Length",
        "Mcp-Session-Id",
        "MCP-Protocol-Version",
        "Content-Type",
        "Accept",
        "Transfer-Encoding",
        "Connection",
    )
)
SECRET_KINDS = (Server.CredentialKind.BEARER, Server.CredentialKind.HEADER)
CREDENTIAL_CLEARED = "the URL's scheme, host or port changed"
URL_MASKED = (
    f"Enter the whole URL again: the parts shown as {secret_urls.MASK} are hidden, and a URL is kept only "
    "when it comes back exactly as shown."
)
URL_UNREADABLE = "The stored URL cannot be decrypted (the encryption keys changed): enter it again."


class ServerInvalid(ValueError):
    """Refused server input; ``errors`` maps each offending field to the message to show beside it."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class ServerInput:
    """Validated, normalised fields of a server (the credential is handled apart: never stored plain)."""

    name: str
    slug: str
    url: str
    credential_kind: str
    credential_header: str
    timeout_seconds: int
    expose_names: bool = False

    def as_fields(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in SERVER_FIELDS}


def suggest_slug(name: str) -> str:
    """The slug a server named ``name`` gets when none is given, e.g. "GitHub Issues" -> "github-issues"."""
    return slugify(name).replace("_", "-")[:SLUG_MAX_LENGTH].strip("-")


def url_origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port of ``url`` (default ports filled in): where a stored credential may be sent."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def url_for_audit(url: str) -> str:
    """What the activity log keeps of an upstream URL: its origin. Hosted MCP servers often carry a secret
    in the path or the query (``https://host/mcp/<key>/sse``, ``?api_key=...``), and the log is read by
    more people (and exported) than the server's settings."""
    return secret_urls.origin(url)


def scrub_message(message: str, server: Server) -> str:
    """``message`` (an upstream error, for a page, the API or the database) without ``server``'s URL
    secrets: the URL shown as its display form, its hidden pieces masked wherever they appear."""
    try:
        return secret_urls.scrub(message, server.decrypt_url())
    except CredentialUnreadable:
        return message


def _name(name: str, errors: dict[str, str]) -> str:
    name = (name or "").strip()
    if not name:
        errors["name"] = "Give the server a name, e.g. “GitHub”."
    elif len(name) > NAME_MAX_LENGTH:
        errors["name"] = f"Use at most {NAME_MAX_LENGTH} characters."
    return name


def _slug(workspace: Workspace, server: Server | None, slug: str, name: str, errors: dict[str, str]) -> str:
    slug = (slug or "").strip()
    if len(slug) > SLUG_MAX_LENGTH:
        errors["slug"] = f"Use at most {SLUG_MAX_LENGTH} characters."
        return slug
    if slug:
        try:
            SERVER_SLUG_VALIDATOR(slug)
        except ValidationError as exc:
            errors["slug"] = exc.messages[0]
            return slug
    if not slug:
        if "name" in errors:
            return slug
        slug = suggest_slug(name)
        if not slug:
            errors["slug"] = "Enter a slug: the name has no letters or digits to make one from."
            return slug
    taken = Server.objects.filter(workspace=workspace, slug=slug)
    if server is not None:
        taken = taken.exclude(pk=server.pk)
    if taken.exists():
        errors["slug"] = f"Another server of this workspace already uses the slug “{slug}”."
    return slug


def _url(url: str, errors: dict[str, str]) -> str:
    url = (url or "").strip()
    if not url:
        errors["url"] = "Enter the server's Streamable HTTP URL."
    elif len(url) > URL_MAX_LENGTH:
        errors["url"] = f"Use at most {URL_MAX_LENGTH} characters."
    elif any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
        errors["url"] = "Enter the URL without spaces."
    elif secret_urls.MASK in url:
        errors["url"] = URL_MASKED
    else:
        try:
            urlsplit(url).port  # noqa: B018 - raises ValueError on a port that is not a number
            check_upstream_url(url)
        except UpstreamAddressRefused as exc:
            errors["url"] = str(exc)
        except ValueError:
            errors["url"] = "Enter a valid URL, e.g. https://mcp.example.com/mcp."
    return url


def _header(kind: str, header: str, errors: dict[str, str]) -> str:
    header = (header or "").strip()
    if kind != Server.CredentialKind.HEADER:
        return ""
    if not header:
        errors["credential_header"] = "Enter the name of the header that carries the credential."
    elif len(header) > HEADER_MAX_LENGTH or not HEADER_NAME_PATTERN.fullmatch(header):
        errors["credential_header"] = "Use a valid header name, e.g. X-API-Key: no spaces, colons or quotes."
    elif header.lower() in RESERVED_HEADERS:
        errors["credential_header"] = f"{header} is set by the gateway itself; choose another."
    return header


def _credential(credential: str, errors: dict[str, str]) -> str:
    credential = (credential or "").strip()
    # It becomes an HTTP header value: a line break would inject another header.
    if any(ord(char) < 32 or ord(char) == 127 for char in credential):
        errors["credential"] = "The credential cannot contain line breaks or control characters."
    elif not credential.isascii():
        # HTTP header values are bytes; a pasted “…” or “ would fail on every request instead of here.
        errors["credential"] = "The credential can only contain ASCII characters."
    elif len(credential) > CREDENTIAL_MAX_LENGTH:
        errors["credential"] = f"Use at most {CREDENTIAL_MAX_LENGTH} characters."
    return credential


def _timeout(timeout_seconds: int | None, errors: dict[str, str]) -> int:
    if timeout_seconds is None:
        errors["timeout_seconds"] = "Enter a timeout in seconds."
        return 0
    if isinstance(timeout_seconds, bool) or not isinstance(timeout_seconds, int):
        errors["timeout_seconds"] = "Enter a whole number of seconds."
        return 0
    if timeout_seconds < 1:
        errors["timeout_seconds"] = "Enter at least 1 second."
    elif timeout_seconds > TIMEOUT_MAX_SECONDS:
        errors["timeout_seconds"] = f"Enter at most {TIMEOUT_MAX_SECONDS} seconds."
    return timeout_seconds


def exposed_names(server: Server) -> tuple[set[str], set[str]]:
    """The names (tools, prompts) and URIs (resources, templates) clients see of ``server``, as its last known
    lists and its settings give them; none for a disabled server."""
    if not server.enabled:
        return set(), set()
    snapshot = server.features_snapshot or {}
    disabled = set(server.disabled_tools or [])
    tools = [(server.slug, t["name"]) for t in server.tools_snapshot or [] if t["name"] not in disabled]
    prompts = [(server.slug, p["name"]) for p in snapshot.get("prompts") or []]
    uris = [(server.slug, r["uri"]) for r in snapshot.get("resources") or []]
    uris += [(server.slug, t["uriTemplate"]) for t in snapshot.get("resource_templates") or []]
    verbatim = {server.slug: server.pk} if server.expose_names else {}
    names = {t.name for group in (tools, prompts) for t in protocol.build_exposed_names(group, verbatim)[0]}
    return names, {u.uri for u in protocol.build_exposed_uris(uris, verbatim)[0]}


def _expose_names(
    workspace: Workspace, server: Server | None, expose: object, errors: dict[str, str]
) -> bool:
    """Exposing a server's names as they are is refused when one of them (by its last known lists) is a name
    or URI another enabled server of the workspace already exposes. A server not contacted yet has no known
    lists: a collision found later is resolved at the next list (the name falls back to ``<server>__<name>``)
    and shown in the Servers tab."""
    if not isinstance(expose, bool):
        errors["expose_names"] = "Choose on or off."
        return False
    if not expose or server is None:
        return expose
    mine = Server(
        pk=server.pk,
        slug=server.slug,
        enabled=True,
        expose_names=True,
        tools_snapshot=server.tools_snapshot,
        features_snapshot=server.features_snapshot,
        disabled_tools=server.disabled_tools,
    )
    names, uris = exposed_names(mine)
    clashes: list[str] = []
    for other in Server.objects.filter(workspace=workspace).exclude(pk=server.pk).order_by("slug"):
        other_names, other_uris = exposed_names(other)
        clashes += [f"{name} ({other.name})" for name in sorted(names & other_names)]
        clashes += [f"{uri} ({other.name})" for uri in sorted(uris & other_uris)]
    if clashes:
        more = f" and {len(clashes) - COLLISIONS_SHOWN} more" if len(clashes) > COLLISIONS_SHOWN else ""
        errors["expose_names"] = (
            "Other servers of this workspace already expose these names: "
            f"{', '.join(clashes[:COLLISIONS_SHOWN])}{more}. Leave this off, or rename them at the source."
        )
    return expose


def server_validate(
    *,
    workspace: Workspace,
    server: Server | None = None,
    name: str,
    slug: str,
    url: str,
    credential_kind: str,
    credential_header: str,
    credential: str,
    timeout_seconds: int | None,
    expose_names: bool = False,
) -> tuple[ServerInput, str]:
    """The normalised fields and credential for adding a server to ``workspace`` (or changing ``server``);
    raises ``ServerInvalid`` naming every offending field. An empty slug is made from the name. Exposing its
    names as they are is refused where they collide with another server's (``_expose_names``)."""
    errors: dict[str, str] = {}
    name = _name(name, errors)
    slug = _slug(workspace, server, slug, name, errors)
    url = _url(url, errors)
    if credential_kind not in Server.CredentialKind.values:
        errors["credential_kind"] = "Choose None, Bearer token or Named header."
    header = _header(credential_kind, credential_header, errors)
    credential = _credential(credential, errors)
    timeout = _timeout(timeout_seconds, errors)
    expose = _expose_names(workspace, server, expose_names, errors)
    # A credential is needed unless one is stored already (on a change, an empty value keeps it; a change of
    # the URL's origin then clears it, see server_update).
    stored = server is not None and server.has_credential
    if credential_kind in SECRET_KINDS and not credential and not stored and "credential" not in errors:
        errors["credential"] = "Enter the credential, or choose “None”."
    if errors:
        raise ServerInvalid(errors)
    return ServerInput(name, slug, url, credential_kind, header, timeout, expose), credential


def _changed(workspace: Workspace, server_id: int) -> None:
    def refresh() -> None:
        catalog.invalidate(workspace.pk, servers=[server_id])
        upstream.forget(server_id)

    transaction.on_commit(refresh)


def server_create(
    *,
    workspace: Workspace,
    actor: User,
    name: str,
    url: str,
    slug: str = "",
    credential_kind: str = Server.CredentialKind.NONE,
    credential_header: str = "",
    credential: str = "",
    timeout_seconds: int | None = 60,
    expose_names: bool = False,
) -> Server:
    """Add an upstream. ``credential`` is encrypted before it is stored and never returned."""
    values, credential = server_validate(
        workspace=workspace,
        name=name,
        slug=slug,
        url=url,
        credential_kind=credential_kind,
        credential_header=credential_header,
        credential=credential,
        timeout_seconds=timeout_seconds,
        expose_names=expose_names,
    )
    with transaction.atomic():
        server = Server(workspace=workspace, **values.as_fields())
        if credential and server.credential_kind != Server.CredentialKind.NONE:
            server.credential_encrypted = encrypt(credential)
        server.save()
        audit_record(
            workspace=workspace,
            actor=actor,
            action="server.create",
            target=f"server:{server.slug}",
            details={"url": url_for_audit(values.url), "credential": server.credential_kind}
            | ({"expose_names": True} if server.expose_names else {}),
        )
        _changed(workspace, server.pk)
    return server


def server_update(
    *,
    server: Server,
    actor: User,
    name: str | None = None,
    slug: str | None = None,
    url: str | None = None,
    credential_kind: str | None = None,
    credential_header: str | None = None,
    credential: str | None = None,
    timeout_seconds: int | None = None,
    expose_names: bool | None = None,
) -> Server:
    """Change an upstream; a field left None keeps its value. ``credential=None`` (or empty) keeps the stored
    secret, a new value replaces it. ``url`` equal to the server's ``url_display`` (the masked form pages and
    the API show) keeps the stored URL too; another URL with masked parts in it is refused.

    A stored credential belongs to the origin (scheme, host, port) it was entered for: a change that points
    the server elsewhere clears it unless a credential is given in the same change. Otherwise an admin who
    never saw the secret could aim the server at a host of their own, press Test connection, and read it.
    """
    try:
        stored_url: str | None = server.decrypt_url()
    except CredentialUnreadable:
        stored_url = None
    if url is not None and url.strip() == server.url_display:
        url = None  # the masked form it was shown with came back unchanged: keep the stored URL
    if url is None:
        if stored_url is None:
            raise ServerInvalid({"url": URL_UNREADABLE})
        url = stored_url
    values, credential = server_validate(
        workspace=server.workspace,
        server=server,
        name=server.name if name is None else name,
        slug=server.slug if slug is None else slug,
        url=url,
        credential_kind=server.credential_kind if credential_kind is None else credential_kind,
        credential_header=server.credential_header if credential_header is None else credential_header,
        credential=credential or "",
        timeout_seconds=server.timeout_seconds if timeout_seconds is None else timeout_seconds,
        expose_names=server.expose_names if expose_names is None else expose_names,
    )
    with transaction.atomic():
        fields = values.as_fields()
        # Compared with the decrypted URL: an unreadable one counts as moved (its credential is unusable too).
        moved = stored_url is None or url_origin(values.url) != url_origin(stored_url)
        current = {k: stored_url if k == "url" else getattr(server, k) for k in fields}
        changed = sorted(k for k, v in fields.items() if current[k] != v)
        details: dict[str, Any] = {}
        for key in changed:
            setattr(server, key, fields[key])  # ``url`` encrypts it and makes its display form
        if server.credential_kind == Server.CredentialKind.NONE:
            if server.credential_encrypted:
                changed.append("credential")
            server.credential_encrypted = ""
        elif credential:
            server.credential_encrypted = encrypt(credential)
            changed.append("credential")
        elif moved and server.credential_encrypted:
            server.credential_encrypted = ""
            changed.append("credential")
            details["credential_cleared"] = CREDENTIAL_CLEARED
        server.save()
        audit_record(
            workspace=server.workspace,
            actor=actor,
            action="server.update",
            target=f"server:{server.slug}",
            details={"changed": changed, **details},
        )
        _changed(server.workspace, server.pk)
    return server


def server_set_enabled(*, server: Server, actor: User, enabled: bool) -> Server:
    with transaction.atomic():
        server.enabled = enabled
        server.save(update_fields=["enabled", "updated_at"])
        audit_record(
            workspace=server.workspace,
            actor=actor,
            action="server.enable" if enabled else "server.disable",
            target=f"server:{server.slug}",
        )
        _changed(server.workspace, server.pk)
    return server


def server_delete(*, server: Server, actor: User) -> None:
    with transaction.atomic():
        workspace, server_id, slug = server.workspace, server.pk, server.slug
        server.delete()
        audit_record(workspace=workspace, actor=actor, action="server.delete", target=f"server:{slug}")
        _changed(workspace, server_id)


def tool_set_enabled(*, server: Server, actor: User, tool: str, enabled: bool) -> Server:
    """Switch one tool of the server's last snapshot on or off; a tool it does not have is refused."""
    with transaction.atomic():
        server = Server.objects.select_for_update().get(pk=server.pk)
        if tool not in {known["name"] for known in server.tools_snapshot}:
            raise ServerInvalid({"tool": f"{server.name} has no tool “{tool}”."})
        disabled = set(server.disabled_tools or [])
        disabled.discard(tool) if enabled else disabled.add(tool)
        server.disabled_tools = sorted(disabled)
        server.save(update_fields=["disabled_tools", "updated_at"])
        audit_record(
            workspace=server.workspace,
            actor=actor,
            action="tool.enable" if enabled else "tool.disable",
            target=f"server:{server.slug}",
            details={"tool": tool},
        )
        _changed(server.workspace, server.pk)
    return server


@dataclass(frozen=True)
class ConnectionTest:
    ok: bool
    tool_count: int = 0
    server_name: str = ""
    error: str = ""
    prompt_count: int = 0
    resource_count: int = 0  # resources and resource templates


def server_test(*, server: Server) -> ConnectionTest:
    """Test connection: initialize + tools/list on a fresh upstream session; records status and tools."""
    now = timezone.now()
    try:
        info, tools, found = upstream.probe(catalog.server_config(server))
    except (upstream.UpstreamError, CredentialUnreadable, ValueError) as exc:
        message = scrub_message(getattr(exc, "message", None) or str(exc), server)
        Server.objects.filter(pk=server.pk).update(last_error=message[:1000], last_checked_at=now)
        server.refresh_from_db()
        return ConnectionTest(ok=False, error=message)
    snapshot = catalog.tool_snapshot(tools)
    fields: dict[str, Any] = {"tools_snapshot": snapshot, "last_error": "", "last_checked_at": now}
    if found is not None:
        fields["features_snapshot"] = catalog.features_snapshot(
            found, server.features_snapshot.get("conflicts", [])
        )
    Server.objects.filter(pk=server.pk).update(**fields)
    server.refresh_from_db()
    return ConnectionTest(
        ok=True,
        tool_count=len(tools),
        server_name=str(info.get("name") or ""),
        prompt_count=server.prompt_count,
        resource_count=server.resource_count,
    )
