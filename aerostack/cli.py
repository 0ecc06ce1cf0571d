"""``aerostack``: the command-line tool. It talks HTTP to the REST API (``/api/v1/``), never imports Django.

Configuration: ``aerostack login`` stores the server URL and a personal API key in
``$XDG_CONFIG_HOME/aerostack/config.json`` (default ``~/.config/aerostack/config.json``, mode 0600);
``AEROSTACK_URL`` and ``AEROSTACK_API_KEY`` override it. ``--json`` on every command prints one JSON document
instead of text. Every error is one line on stderr. Exit codes: 0 ok, 1 error, 2 usage.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import requests

F = TypeVar("F", bound=Callable[..., Any])
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
TIMEOUT_SECONDS = 30
TOKEN_COLUMNS = [
    ("id", "ID"),
    ("name", "NAME"),
    ("holder", "HOLDER"),
    ("status", "STATUS"),
    ("created_at", "CREATED"),
    ("expires_at", "EXPIRES"),
    ("last_used_at", "LAST USED"),
]


class CliError(click.ClickException):
    """An error the user can act on: printed as one line, exit code 1."""


# -- configuration -----------------------------------------------------------------------------------------
def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "aerostack" / "config.json"


def _read_config() -> dict[str, str]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc}; run `aerostack login` again") from None
    return {key: str(value) for key, value in data.items()} if isinstance(data, dict) else {}


def _write_config(data: dict[str, str]) -> Path:
    """Write the config with mode 0600 from the start (never a moment when others could read the key)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(data, handle, indent=2)
    os.chmod(temporary, 0o600)  # an older file of that name may have had another mode
    os.replace(temporary, path)
    return path


def _settings() -> tuple[str, str]:
    config = _read_config()
    url = os.environ.get("AEROSTACK_URL") or config.get("url") or ""
    key = os.environ.get("AEROSTACK_API_KEY") or config.get("api_key") or ""
    if not url or not key:
        raise CliError(
            "not logged in: run `aerostack login --url URL` (or set AEROSTACK_URL and AEROSTACK_API_KEY)"
        )
    return url.rstrip("/"), key


# -- HTTP ----------------------------------------------------------------------------------------------------
class Api:
    def __init__(self, url: str, key: str) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {key}", "Accept": "application/json"})

    def call(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if not self.url.startswith(("http://", "https://")):
            raise CliError(f"not a valid server URL (use http:// or https://): {self.url}")
        try:
            response = self.session.request(method, url, json=body, params=params, timeout=TIMEOUT_SECONDS)
        except requests.exceptions.InvalidURL:
            raise CliError(f"not a valid server URL: {self.url}") from None
        except requests.exceptions.MissingSchema:
            raise CliError(f"not a valid server URL (use http:// or https://): {self.url}") from None
        except requests.exceptions.Timeout:
            raise CliError(f"the server at {self.url} did not answer within {TIMEOUT_SECONDS} s") from None
        except requests.exceptions.ConnectionError:
            raise CliError(f"cannot reach the server at {self.url}: is it running?") from None
        except requests.exceptions.RequestException as exc:  # e.g. a scheme requests has no adapter for
            raise CliError(f"the request to {self.url} failed: {exc}") from None
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = None
        if response.status_code >= 400:
            raise CliError(_error_line(response.status_code, data, self.url))
        if data is None and response.status_code != 204:
            raise CliError(
                f"unexpected answer from {self.url} (HTTP {response.status_code}): is this Aerostack?"
            )
        return data

    def pages(self, path: str, params: dict[str, Any] | None = None, limit: int = 20_000) -> list[Any]:
        """The results of a paginated list, page after page, up to ``limit``."""
        results: list[Any] = []
        page = 1
        while len(results) < limit:
            size = min(200, limit - len(results))
            data = self.call("GET", path, params={**(params or {}), "page": page, "page_size": size})
            results.extend(data["results"])
            if not data.get("next"):
                break
            page += 1
        return results[:limit]


def _error_line(status: int, data: Any, url: str) -> str:
    error = data.get("error") if isinstance(data, dict) else None
    message = str(error.get("message")) if isinstance(error, dict) else f"HTTP {status} from {url}"
    if status == 401:
        return f"the API key was refused ({message}): run `aerostack login` with a valid key"
    if status == 403:
        return f"permission denied: {message}"
    if status == 404:
        return f"not found: {message}"
    if status == 429:
        return f"too many requests: {message}; try again later"
    return message


def _api() -> Api:
    url, key = _settings()
    return Api(url, key)


# -- output --------------------------------------------------------------------------------------------------
def _colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True))


def _when(value: Any, empty: str = "never") -> str:
    if not value:
        return empty
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return str(value)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    cells = [[_cell(key, row.get(key)) for key, _ in columns] for row in rows]
    widths = [max([len(title), *(len(line[i]) for line in cells)]) for i, (_, title) in enumerate(columns)]
    header = "  ".join(title.ljust(widths[i]) for i, (_, title) in enumerate(columns)).rstrip()
    if _colour():
        header = click.style(header, bold=True)
    lines = [header]
    lines += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in cells]
    return "\n".join(lines)


def _cell(key: str, value: Any) -> str:
    if key.endswith("_at"):
        return _when(value, "never" if key in ("expires_at", "last_used_at") else "-")
    return "-" if value is None or value == "" else str(value)


def json_option(function: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")(
        function
    )


# -- commands ------------------------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aerostack")
def cli() -> None:
    """Aerostack from the terminal: workspaces, tokens, members and servers through the REST API.

    \b
    Start with:  aerostack login --url http://127.0.0.1:8000
    Then e.g.:   aerostack workspace token create my-workspace --name "CI Bot" --expires-in 86400
    Exit codes: 0 ok, 1 error, 2 usage. Shell completion: eval "$(_AEROSTACK_COMPLETE=bash_source aerostack)".
    """


@cli.command()
@click.option("--url", required=True, help="The Aerostack server, e.g. http://127.0.0.1:8000")
@json_option
def login(url: str, as_json: bool) -> None:
    """Store the server URL and an API key (asked for without echo) in the config file (mode 0600).

    \b
    Example: aerostack login --url http://127.0.0.1:8000
    Create the key in the dashboard: account menu, API keys.
    """
    key = os.environ.get("AEROSTACK_API_KEY") or _ask_key()
    me = Api(url, key).call("GET", "me")
    path = _write_config({"url": url.rstrip("/"), "api_key": key})
    if as_json:
        _emit_json({"url": url.rstrip("/"), "user": me["user"], "config": str(path)})
    else:
        click.echo(f"Logged in to {url.rstrip('/')} as {me['user']['username']} (saved to {path}).")


def _ask_key() -> str:
    """On a terminal: a prompt without echo. Piped (``aerostack login --url URL < key.txt``): one line."""
    if sys.stdin.isatty():
        key = str(click.prompt("API key", hide_input=True, err=True))
    else:
        key = sys.stdin.readline()
    if not key.strip():
        raise CliError("no API key given: create one in the dashboard (account menu, API keys)")
    return key.strip()


@cli.command()
@json_option
def logout(as_json: bool) -> None:
    """Forget the stored URL and API key (the key itself stays valid: revoke it in the dashboard).

    \b
    Example: aerostack logout
    """
    path = config_path()
    existed = path.exists()
    path.unlink(missing_ok=True)
    if as_json:
        _emit_json({"logged_out": existed, "config": str(path)})
    else:
        click.echo(f"Logged out (removed {path})." if existed else "Not logged in.")


@cli.command()
@json_option
def whoami(as_json: bool) -> None:
    """Show who the API key acts as.

    \b
    Example: aerostack whoami
    """
    api = _api()
    me = api.call("GET", "me")
    if as_json:
        _emit_json({**me, "url": api.url})
    else:
        key = me.get("key") or {}
        click.echo(
            f"{me['user']['username']} on {api.url} (key {key.get('name', '?')}, {key.get('hint', '')})"
        )


@cli.group()
def workspace() -> None:
    """Workspaces and what is in them (tokens, members, servers, activity)."""


WORKSPACE_COLUMNS = [("slug", "SLUG"), ("name", "NAME"), ("role", "ROLE"), ("gateway_url", "GATEWAY URL")]


@workspace.command("list")
@json_option
def workspace_list(as_json: bool) -> None:
    """The workspaces you belong to.

    \b
    Example: aerostack workspace list
    """
    rows = _api().pages("workspaces")
    if as_json:
        _emit_json(rows)
    else:
        click.echo(_table(rows, WORKSPACE_COLUMNS) if rows else "No workspaces.")


@workspace.command("create")
@click.argument("name")
@click.option("--description", default="", help="What the workspace is for.")
@json_option
def workspace_create(name: str, description: str, as_json: bool) -> None:
    """Create a workspace (you become its owner).

    \b
    Example: aerostack workspace create "Acme Tools"
    """
    created = _api().call("POST", "workspaces", body={"name": name, "description": description})
    if as_json:
        _emit_json(created)
    else:
        click.echo(
            f"Created workspace {created['slug']} ({created['name']}); gateway: {created['gateway_url']}"
        )


@workspace.command("show")
@click.argument("ws")
@json_option
def workspace_show(ws: str, as_json: bool) -> None:
    """One workspace: name, your role, gateway URL, rate limit.

    \b
    Example: aerostack workspace show my-workspace
    """
    found = _api().call("GET", f"workspaces/{_part(ws)}")
    if as_json:
        _emit_json(found)
        return
    for label, key in [
        ("Slug", "slug"),
        ("Name", "name"),
        ("Your role", "role"),
        ("Gateway URL", "gateway_url"),
        ("Rate limit", "effective_rate_limit"),
        ("Description", "description"),
    ]:
        click.echo(f"{label + ':':<13}{found.get(key) if found.get(key) not in (None, '') else '-'}")


def _part(value: str) -> str:
    """A path segment of the URL: refuse what would change the path (a slash, dots)."""
    if not value or "/" in value or value in (".", "..") or "?" in value or "#" in value:
        raise CliError(f"not a valid name or id: {value!r}")
    return value


@workspace.group()
def token() -> None:
    """Workspace tokens (mwt_...): create, list, revoke, rotate."""


@token.command("create")
@click.argument("ws")
@click.option("--name", required=True, help='What the token is for, e.g. "CI Bot".')
@click.option(
    "--expires-in", type=int, default=None, metavar="SECONDS", help="Expire after SECONDS (default: never)."
)
@click.option(
    "--holder", type=int, default=None, metavar="MEMBER_ID", help="Hold it for another member (admins)."
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    metavar="SERVER_ID[:TOOL,...]",
    help="Limit the token to this server (all its tools, or the listed ones); repeat for more servers.",
)
@json_option
def token_create(
    ws: str, name: str, expires_in: int | None, holder: int | None, scopes: tuple[str, ...], as_json: bool
) -> None:
    """Create a token and print its value once, with the mcp_json block for MCP clients.

    \b
    Example: aerostack workspace token create my-workspace --name "CI Bot" --expires-in 86400
    Scoped:  aerostack workspace token create my-workspace --name "Docs bot" --scope 3:search,fetch
    """
    body: dict[str, Any] = {"name": name, "expires_in": expires_in, "holder_id": holder}
    if scopes:
        body["scopes"] = _scopes(scopes)
    created = _api().call("POST", f"workspaces/{_part(ws)}/tokens", body=body)
    if as_json:
        _emit_json(created)
        return
    made = created["token"]
    expires = _when(made["expires_at"])
    click.echo(f"Created token {made['id']} “{made['name']}” for {made['holder']}, expires: {expires}.")
    _show_once(created)


def _show_once(created: dict[str, Any]) -> None:
    """The raw token and its mcp_json block: printed this once (the server never shows them again)."""
    click.echo("Copy it now: this is the only time it is shown.")
    click.echo("")
    click.echo(created["raw"])
    click.echo("")
    click.echo("mcp_json:")
    click.echo(json.dumps(created["mcp_json"], indent=2))


def _scopes(given: tuple[str, ...]) -> dict[str, list[str] | None]:
    """``--scope 3 --scope 4:search,fetch`` as the API's ``{"3": null, "4": ["search", "fetch"]}``."""
    scopes: dict[str, list[str] | None] = {}
    for item in given:
        server, _, tools = item.partition(":")
        if not server.strip().isdigit():
            raise click.BadParameter(
                f"{item!r}: give a server id, e.g. 3 or 3:search,fetch", param_hint="--scope"
            )
        names = [tool.strip() for tool in tools.split(",") if tool.strip()]
        scopes[server.strip()] = names or None
    return scopes


@token.command("rotate")
@click.argument("ws")
@click.argument("token_id", type=int)
@click.option(
    "--grace",
    "grace_seconds",
    type=int,
    default=0,
    show_default=True,
    metavar="SECONDS",
    help="How long the old token keeps working (0: revoked at once).",
)
@json_option
def token_rotate(ws: str, token_id: int, grace_seconds: int, as_json: bool) -> None:
    """Replace a token with a new one (printed once, with mcp_json); the old one stops after the grace.

    \b
    Example: aerostack workspace token rotate my-workspace 42 --grace 3600
    """
    rotated = _api().call(
        "POST", f"workspaces/{_part(ws)}/tokens/{token_id}/rotate", body={"grace_seconds": grace_seconds}
    )
    if as_json:
        _emit_json(rotated)
        return
    previous, made = rotated["previous"], rotated["token"]
    stops = "now" if previous["status"] == "revoked" else _when(previous["expires_at"])
    click.echo(
        f"Rotated token {previous['id']} into {made['id']} “{made['name']}”; the old one stops: {stops}."
    )
    _show_once(rotated)


@token.command("list")
@click.argument("ws")
@click.option(
    "--status", type=click.Choice(["active", "expired", "revoked"]), default=None, help="Only these."
)
@click.option("--holder", type=int, default=None, metavar="MEMBER_ID", help="Only this member's tokens.")
@json_option
def token_list(ws: str, status: str | None, holder: int | None, as_json: bool) -> None:
    """The tokens you may see (owners and admins: everyone's), newest first.

    \b
    Example: aerostack workspace token list my-workspace
    """
    params = {key: value for key, value in (("status", status), ("holder", holder)) if value is not None}
    rows = _api().pages(f"workspaces/{_part(ws)}/tokens", params)
    if as_json:
        _emit_json(rows)
    else:
        click.echo(_table(rows, TOKEN_COLUMNS) if rows else "No tokens.")


@token.command("revoke")
@click.argument("ws")
@click.argument("token_id", type=int)
@json_option
def token_revoke(ws: str, token_id: int, as_json: bool) -> None:
    """Revoke a token at once and for good: the gateway refuses it from the next request.

    \b
    Example: aerostack workspace token revoke my-workspace 42
    """
    revoked = _api().call("POST", f"workspaces/{_part(ws)}/tokens/{token_id}/revoke")
    if as_json:
        _emit_json(revoked)
    else:
        click.echo(f"Revoked token {revoked['id']} “{revoked['name']}” ({revoked['hint']}).")


@workspace.group()
def member() -> None:
    """Members and invites: list, invite, remove, change role."""


MEMBER_COLUMNS = [
    ("id", "ID"),
    ("username", "USER"),
    ("role", "ROLE"),
    ("joined_at", "JOINED"),
    ("active_tokens", "TOKENS"),
    ("tool_calls", "CALLS"),
    ("last_active", "LAST ACTIVE"),
]


@member.command("list")
@click.argument("ws")
@json_option
def member_list(ws: str, as_json: bool) -> None:
    """Current members with role, active tokens, tool calls and last activity.

    \b
    Example: aerostack workspace member list my-workspace
    """
    rows = _api().pages(f"workspaces/{_part(ws)}/members")
    if as_json:
        _emit_json(rows)
    else:
        click.echo(_table(rows, MEMBER_COLUMNS))


@member.command("invite")
@click.argument("ws")
@click.argument("email")
@click.option("--role", type=click.Choice(["member", "admin"]), default="member", show_default=True)
@json_option
def member_invite(ws: str, email: str, role: str, as_json: bool) -> None:
    """Invite an email address (owners and admins); the invitee gets a single-use link by email.

    \b
    Example: aerostack workspace member invite my-workspace bob@example.com --role admin
    """
    sent = _api().call("POST", f"workspaces/{_part(ws)}/invites", body={"email": email, "role": role})
    if as_json:
        _emit_json(sent)
    else:
        invite = sent["invite"]
        note = "" if sent["delivered"] else " (the email could not be sent: check the server's mail settings)"
        click.echo(
            f"Invited {invite['email']} as {invite['role']}; expires {_when(invite['expires_at'])}{note}."
        )


@member.command("remove")
@click.argument("ws")
@click.argument("member_id", type=int)
@json_option
def member_remove(ws: str, member_id: int, as_json: bool) -> None:
    """Remove a member (see `member list` for ids): their tokens are revoked at once.

    \b
    Example: aerostack workspace member remove my-workspace 7
    """
    _api().call("DELETE", f"workspaces/{_part(ws)}/members/{member_id}")
    if as_json:
        _emit_json({"removed": member_id})
    else:
        click.echo(f"Removed member {member_id}; their tokens were revoked.")


@member.command("role")
@click.argument("ws")
@click.argument("member_id", type=int)
@click.argument("role", type=click.Choice(["owner", "admin", "member"]))
@json_option
def member_role(ws: str, member_id: int, role: str, as_json: bool) -> None:
    """Change a member's role.

    \b
    Example: aerostack workspace member role my-workspace 7 admin
    """
    changed = _api().call("PATCH", f"workspaces/{_part(ws)}/members/{member_id}", body={"role": role})
    if as_json:
        _emit_json(changed)
    else:
        click.echo(f"{changed['username']} is now {changed['role']}.")


@workspace.group()
def server() -> None:
    """Upstream MCP servers: add, list, remove, test."""


SERVER_COLUMNS = [
    ("id", "ID"),
    ("slug", "SLUG"),
    ("name", "NAME"),
    ("url", "URL"),
    ("enabled", "ENABLED"),
    ("status", "STATUS"),
    ("tool_count", "TOOLS"),
    ("prompt_count", "PROMPTS"),
    ("resource_count", "RESOURCES"),
]


@server.command("list")
@click.argument("ws")
@json_option
def server_list(ws: str, as_json: bool) -> None:
    """The workspace's upstream servers.

    \b
    Example: aerostack workspace server list my-workspace
    """
    rows = _api().pages(f"workspaces/{_part(ws)}/servers")
    if as_json:
        _emit_json(rows)
    else:
        click.echo(_table(rows, SERVER_COLUMNS) if rows else "No servers.")


@server.command("add")
@click.argument("ws")
@click.option("--name", required=True, help="A name people recognise, e.g. GitHub.")
@click.option("--url", help="The upstream's streamable HTTP endpoint.")
@click.option(
    "--url-env",
    metavar="VARIABLE",
    help="Read the URL from this environment variable instead (for a URL with a key in it).",
)
@click.option("--slug", default="", help="The tool prefix (<slug>__<tool>); default: from the name.")
@click.option("--bearer-env", metavar="VARIABLE", help="Send the bearer token in this environment variable.")
@click.option("--timeout", "timeout_seconds", type=int, default=60, show_default=True, help="Seconds.")
@click.option(
    "--expose-names",
    is_flag=True,
    help="Its tools, prompts and resources keep their upstream names (no <slug>__ prefix).",
)
@json_option
def server_add(
    ws: str,
    name: str,
    url: str | None,
    url_env: str | None,
    slug: str,
    bearer_env: str | None,
    timeout_seconds: int,
    expose_names: bool,
    as_json: bool,
) -> None:
    """Add an upstream server (owners and admins). A credential is read from an environment variable, never
    from the command line (where other users and shell history would see it); so is a URL that carries a key
    (--url-env). Answers show the URL with its secret-looking parts as ••••.

    \b
    Example: GITHUB_TOKEN=... aerostack workspace server add my-workspace --name GitHub \\
               --url https://mcp.example.com/mcp --bearer-env GITHUB_TOKEN
    """
    if (url is None) == (url_env is None):
        raise CliError("give the URL with --url or --url-env VARIABLE (one of them)")
    if url_env is not None:
        url = os.environ.get(url_env, "")
        if not url:
            raise CliError(f"the environment variable {url_env} is empty or not set")
    body: dict[str, Any] = {"name": name, "url": url, "slug": slug, "timeout_seconds": timeout_seconds}
    if expose_names:
        body["expose_names"] = True
    if bearer_env:
        credential = os.environ.get(bearer_env, "")
        if not credential:
            raise CliError(f"the environment variable {bearer_env} is empty or not set")
        body.update({"credential_kind": "bearer", "credential": credential})
    added = _api().call("POST", f"workspaces/{_part(ws)}/servers", body=body)
    if as_json:
        _emit_json(added)
    else:
        click.echo(
            f"Added server {added['id']} {added['name']} ({added['slug']}). Test it: aerostack "
            f"workspace server test {ws} {added['id']}"
        )


@server.command("remove")
@click.argument("ws")
@click.argument("server_id", type=int)
@json_option
def server_remove(ws: str, server_id: int, as_json: bool) -> None:
    """Delete a server: its tools leave the gateway at once.

    \b
    Example: aerostack workspace server remove my-workspace 3
    """
    _api().call("DELETE", f"workspaces/{_part(ws)}/servers/{server_id}")
    if as_json:
        _emit_json({"removed": server_id})
    else:
        click.echo(f"Removed server {server_id}.")


@server.command("test")
@click.argument("ws")
@click.argument("server_id", type=int)
@json_option
def server_test(ws: str, server_id: int, as_json: bool) -> None:
    """Test the connection (initialize + tools/list). Exit code 1 when it fails.

    \b
    Example: aerostack workspace server test my-workspace 3
    """
    result = _api().call("POST", f"workspaces/{_part(ws)}/servers/{server_id}/test")
    if as_json:
        _emit_json(result)
    elif result["ok"]:
        click.echo(f"Connected to {result['server']['name']}: {result['tool_count']} tools.")
    if not result["ok"]:
        raise CliError(f"could not connect to {result['server']['name']}: {result['error']}")


ACTIVITY_COLUMNS = [("created_at", "WHEN"), ("actor", "WHO"), ("action", "ACTION"), ("summary", "WHAT")]


@workspace.command("activity")
@click.argument("ws")
@click.option("--action", help="Only this action, e.g. token.create.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="Newest N.")
@json_option
def workspace_activity(ws: str, action: str | None, limit: int, as_json: bool) -> None:
    """The activity log, newest first (members: the events by or about them).

    \b
    Example: aerostack workspace activity my-workspace --action token.revoke
    """
    params: dict[str, Any] = {"action": action} if action else {}
    rows = _api().pages(f"workspaces/{_part(ws)}/audit-events", params, limit=limit)
    if as_json:
        _emit_json(rows)
    else:
        click.echo(_table(rows, ACTIVITY_COLUMNS) if rows else "No activity.")


# -- entry point ---------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; every error is one line on stderr (no usage dump, no traceback)."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="aerostack", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "aerostack --help", err=True)  # a bare group: its help
        return EXIT_USAGE
    except click.UsageError as exc:
        click.echo(f"aerostack: {exc.format_message()} (see --help)", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        click.echo(f"aerostack: {exc.format_message()}", err=True)
        return EXIT_ERROR
    except click.Abort:
        click.echo("aerostack: aborted", err=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        click.echo("aerostack: interrupted", err=True)
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
