"""The installed ``aerostack`` console script, run as a subprocess against a real live server (gunicorn):
login, token create -> the token works at the gateway -> list (table and --json) -> revoke -> the gateway
refuses it; and every error path: one line on stderr and a non-zero exit code, never a traceback."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import requests
from click.testing import CliRunner

from aerostack import cli
from api import keyformat
from tests.e2e.gateway_stack import INITIALIZE
from tests.live import LiveServer, free_port, live_server

pytestmark = pytest.mark.e2e
AEROSTACK = Path(sys.executable).parent / "aerostack"
SETUP = """
import json
from django.contrib.auth.models import User
from api.services import api_key_create
from workspaces.services import workspace_create
owner = User.objects.create_user(username="owner@example.com", password="x-long-password-1")
member = User.objects.create_user(username="member@example.com", password="x-long-password-1")
ws = workspace_create(name="My Workspace", owner=owner)
ws.members.create(user=member, role="member")
workspace_create(name="Not Theirs", owner=owner)
revoked = api_key_create(user=owner, name="old", expires_in=None)
revoked.key.revoked_at = revoked.key.created_at
revoked.key.save()
print(json.dumps({
    "slug": ws.slug,
    "owner_key": api_key_create(user=owner, name="Laptop CLI", expires_in=None).raw,
    "member_key": api_key_create(user=member, name="Member CLI", expires_in=None).raw,
    "revoked_key": revoked.raw,
}))
"""


@dataclass
class Stack:
    server: LiveServer
    slug: str
    owner_key: str
    member_key: str
    revoked_key: str
    home: Path

    def run(
        self, *args: str, key: str | None = None, stdin: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        environment = {
            k: v for k, v in os.environ.items() if not k.startswith(("AEROSTACK_", "PYTEST", "DJANGO"))
        }
        environment.update(
            {"HOME": str(self.home), "XDG_CONFIG_HOME": str(self.home / ".config"), "NO_COLOR": "1"}
        )
        if key is not None:
            environment.update({"AEROSTACK_URL": self.server.url, "AEROSTACK_API_KEY": key})
        environment.update(env)
        return subprocess.run(
            [str(AEROSTACK), *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            env=environment,
            timeout=60,
            start_new_session=True,  # no controlling terminal: the key is read from stdin, not /dev/tty
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with live_server(workers=1, threads=4, extra_env={"ALLOW_PRIVATE_UPSTREAMS": "true"}) as server:
        data = json.loads(server.manage("shell", "-c", SETUP).strip().splitlines()[-1])
        yield Stack(server=server, home=tmp_path_factory.mktemp("home"), **data)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert lines[0].startswith("aerostack: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def gateway_call(stack: Stack, raw: str) -> list[int]:
    """initialize then ping through the gateway with ``raw``: the HTTP statuses."""
    headers = {"Authorization": f"Bearer {raw}", "Accept": "application/json, text/event-stream"}
    url = f"{stack.server.url}/ws/{stack.slug}"
    first = requests.post(url, json=INITIALIZE, headers=headers, timeout=30)
    if first.status_code != 200:
        return [first.status_code]
    session = first.headers.get("Mcp-Session-Id")
    if session:
        headers["Mcp-Session-Id"] = session
    headers["MCP-Protocol-Version"] = "2025-11-25"
    ping = requests.post(url, json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers=headers, timeout=30)
    if ping.status_code == 200 and "application/json" in ping.headers.get("Content-Type", ""):
        assert ping.json()["result"] == {}
    return [first.status_code, ping.status_code]


def test_the_whole_token_flow_through_the_cli(stack: Stack) -> None:
    login = stack.run("login", "--url", stack.server.url, stdin=stack.owner_key + "\n")
    assert login.returncode == 0, login.stderr
    assert "owner@example.com" in login.stdout
    config = stack.home / ".config" / "aerostack" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text()) == {"url": stack.server.url, "api_key": stack.owner_key}

    assert "owner@example.com" in stack.run("whoami").stdout
    created = stack.run(
        "workspace", "token", "create", stack.slug, "--name", "CI Bot", "--expires-in", "86400"
    )
    assert created.returncode == 0, created.stderr
    raw = next(line for line in created.stdout.splitlines() if line.startswith("mwt_"))
    mcp = json.loads(created.stdout.split("mcp_json:", 1)[1])
    assert mcp["mcpServers"][stack.slug]["headers"]["Authorization"] == f"Bearer {raw}"
    assert mcp["mcpServers"][stack.slug]["url"] == f"{stack.server.url}/ws/{stack.slug}"
    assert gateway_call(stack, raw) == [200, 200]

    table = stack.run("workspace", "token", "list", stack.slug)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "HOLDER", "STATUS", "CREATED", "EXPIRES", "LAST", "USED"]
    assert len(rows) == 1 and "CI Bot" in rows[0] and "active" in rows[0] and "owner@example.com" in rows[0]
    assert header.index("STATUS") == rows[0].index("active")  # aligned columns
    assert raw not in table.stdout

    listed = json.loads(stack.run("workspace", "token", "list", stack.slug, "--json").stdout)
    assert [(t["name"], t["status"]) for t in listed] == [("CI Bot", "active")]
    token_id = str(listed[0]["id"])

    revoked = stack.run("workspace", "token", "revoke", stack.slug, token_id)
    assert revoked.returncode == 0 and "Revoked token" in revoked.stdout
    assert gateway_call(stack, raw) == [401]
    after = json.loads(stack.run("workspace", "token", "list", stack.slug, "--json").stdout)
    assert after[0]["status"] == "revoked"

    document = json.loads(
        stack.run("workspace", "token", "create", stack.slug, "--name", "J", "--json").stdout
    )
    assert document["raw"].startswith("mwt_") and "mcp_json" in document
    assert json.loads(stack.run("workspace", "list", "--json").stdout)[0]["slug"]
    assert json.loads(stack.run("workspace", "show", stack.slug, "--json").stdout)["role"] == "owner"
    assert stack.run("logout").returncode == 0 and not config.exists()
    assert_one_line_error(stack.run("whoami"), 1, "not logged in")


def test_environment_variables_override_the_config(stack: Stack) -> None:
    result = stack.run("whoami", "--json", key=stack.member_key)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["user"]["username"] == "member@example.com"


def test_a_dead_server_is_one_line(stack: Stack) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = stack.run(
        "workspace", "token", "list", stack.slug, AEROSTACK_URL=dead, AEROSTACK_API_KEY=stack.owner_key
    )
    assert_one_line_error(result, 1, "cannot reach", dead)
    assert_one_line_error(stack.run("login", "--url", dead, stdin=stack.owner_key), 1, "cannot reach")
    no_scheme = stack.run("whoami", AEROSTACK_URL="127.0.0.1:8000", AEROSTACK_API_KEY=stack.owner_key)
    assert_one_line_error(no_scheme, 1, "use http:// or https://")


@pytest.mark.parametrize(
    ("args", "key_name", "needles"),
    [
        (("workspace", "token", "list", "{slug}"), "bad", ("API key was refused", "Unknown API key")),
        (("workspace", "token", "list", "{slug}"), "revoked_key", ("API key was refused", "revoked")),
        (
            ("workspace", "token", "list", "nobody-s-workspace"),
            "owner_key",
            ("not found", "No such workspace"),
        ),
        (("workspace", "token", "revoke", "{slug}", "999999"), "owner_key", ("not found",)),
        (
            ("workspace", "token", "create", "{slug}", "--name", "x", "--holder", "1"),
            "member_key",
            ("permission denied",),
        ),
        (
            ("workspace", "token", "create", "{slug}", "--name", "x", "--expires-in", "0"),
            "owner_key",
            ("expires_in", "at least 1 second"),
        ),
        (
            ("workspace", "token", "create", "{slug}", "--name", "x", "--expires-in", "999999999999"),
            "owner_key",
            ("expires_in",),
        ),
        (("workspace", "token", "list", "{slug}", "--json"), "bad", ("API key was refused",)),
    ],
    ids=[
        "wrong-key",
        "revoked-key",
        "unknown-workspace",
        "unknown-token",
        "no-permission",
        "zero-expiry",
        "huge-expiry",
        "json-error",
    ],
)
def test_each_error_is_one_line_and_exit_1(
    stack: Stack, args: tuple[str, ...], key_name: str, needles: tuple[str, ...]
) -> None:
    key = keyformat.generate() if key_name == "bad" else getattr(stack, key_name)
    result = stack.run(*(arg.format(slug=stack.slug) for arg in args), key=key)
    assert_one_line_error(result, 1, *needles)


def test_usage_errors_are_one_line_and_exit_2(stack: Stack) -> None:
    result = stack.run(
        "workspace", "token", "create", stack.slug, "--name", "x", "--expires-in", "soon", key=stack.owner_key
    )
    assert_one_line_error(result, 2, "--expires-in")
    assert_one_line_error(
        stack.run("workspace", "token", "revoke", stack.slug, key=stack.owner_key), 2, "TOKEN_ID"
    )


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


def test_every_command_has_help_with_an_example_and_json(stack: Stack) -> None:
    commands = _commands(cli.cli)
    assert len(commands) >= 18  # the walk found them
    for command in commands:
        result = stack.run(*command, "--help") if command == ("login",) else None
        text = result.stdout if result else CliRunner().invoke(cli.cli, [*command, "--help"]).output
        assert "Example:" in text and "aerostack " in text, command
        assert "--json" in text, command


def test_member_server_and_activity_commands(stack: Stack) -> None:
    owner = stack.owner_key
    members = json.loads(stack.run("workspace", "member", "list", stack.slug, "--json", key=owner).stdout)
    member_id = next(row["id"] for row in members if row["username"] == "member@example.com")
    table = stack.run("workspace", "member", "list", stack.slug, key=owner).stdout
    assert table.splitlines()[0].split()[:3] == ["ID", "USER", "ROLE"] and "member@example.com" in table

    invited = stack.run(
        "workspace", "member", "invite", stack.slug, "erin@example.com", "--role", "admin", key=owner
    )
    assert invited.returncode == 0 and "Invited erin@example.com as admin" in invited.stdout, invited.stderr
    again = stack.run("workspace", "member", "invite", stack.slug, "erin@example.com", key=owner)
    assert_one_line_error(again, 1, "pending invite")

    promoted = stack.run("workspace", "member", "role", stack.slug, str(member_id), "admin", key=owner)
    assert promoted.returncode == 0 and "is now admin" in promoted.stdout
    assert_one_line_error(
        stack.run("workspace", "member", "role", stack.slug, str(member_id), "boss", key=owner), 2
    )

    closed = f"http://127.0.0.1:{free_port()}/mcp"
    added = json.loads(
        stack.run(
            "workspace", "server", "add", stack.slug, "--name", "Local", "--url", closed, "--json", key=owner
        ).stdout
    )
    assert added["slug"] == "local" and added["expose_names"] is False
    verbatim = json.loads(
        stack.run(
            "workspace",
            "server",
            "add",
            stack.slug,
            "--name",
            "Own",
            "--url",
            closed,
            "--expose-names",
            "--json",
            key=owner,
        ).stdout
    )
    assert verbatim["expose_names"] is True
    assert (
        stack.run("workspace", "server", "remove", stack.slug, str(verbatim["id"]), key=owner).returncode == 0
    )
    listed = stack.run("workspace", "server", "list", stack.slug, key=owner).stdout
    assert "local" in listed and listed.splitlines()[0].split()[:3] == ["ID", "SLUG", "NAME"]
    assert_one_line_error(
        stack.run("workspace", "server", "test", stack.slug, str(added["id"]), key=owner),
        1,
        "could not connect",
    )
    bad = stack.run("workspace", "server", "add", stack.slug, "--name", "Bad", "--url", "ftp://x", key=owner)
    assert_one_line_error(bad, 1, "url")
    missing = stack.run(
        "workspace",
        "server",
        "add",
        stack.slug,
        "--name",
        "B",
        "--url",
        closed,
        "--bearer-env",
        "NOPE_NOT_SET",
        key=owner,
    )
    assert_one_line_error(missing, 1, "NOPE_NOT_SET")
    assert stack.run("workspace", "server", "remove", stack.slug, str(added["id"]), key=owner).returncode == 0

    removed = stack.run("workspace", "member", "remove", stack.slug, str(member_id), key=owner)
    assert removed.returncode == 0 and "revoked" in removed.stdout
    activity = json.loads(
        stack.run("workspace", "activity", stack.slug, "--json", "--limit", "3", key=owner).stdout
    )
    assert len(activity) == 3 and activity[0]["action"] == "member.remove"
    text = stack.run("workspace", "activity", stack.slug, "--action", "server.create", key=owner).stdout
    assert text.splitlines()[0].split() == ["WHEN", "WHO", "ACTION", "WHAT"] and "server.create" in text
    created = stack.run("workspace", "create", "CLI Made", key=owner)
    assert created.returncode == 0 and "cli-made" in created.stdout


def test_rotate_and_scopes_through_the_cli(stack: Stack) -> None:
    owner = stack.owner_key
    made = json.loads(
        stack.run(
            "workspace", "token", "create", stack.slug, "--name", "Rotating", "--json", key=owner
        ).stdout
    )
    rotated = stack.run(
        "workspace", "token", "rotate", stack.slug, str(made["token"]["id"]), "--grace", "3600", key=owner
    )
    assert rotated.returncode == 0, rotated.stderr
    successor = next(line for line in rotated.stdout.splitlines() if line.startswith("mwt_"))
    assert "mcp_json:" in rotated.stdout and successor != made["raw"]
    assert gateway_call(stack, made["raw"]) == [200, 200]  # the grace period
    assert gateway_call(stack, successor) == [200, 200]
    successor_id = str(
        json.loads(stack.run("workspace", "token", "list", stack.slug, "--json", key=owner).stdout)[0]["id"]
    )
    document = json.loads(
        stack.run("workspace", "token", "rotate", stack.slug, successor_id, "--json", key=owner).stdout
    )
    assert document["previous"]["status"] == "revoked" and document["raw"].startswith("mwt_")
    assert gateway_call(stack, successor) == [401]
    again = stack.run("workspace", "token", "rotate", stack.slug, successor_id, key=owner)
    assert_one_line_error(again, 1, "only an active token can be rotated")
    assert_one_line_error(
        stack.run("workspace", "token", "rotate", stack.slug, successor_id, "--grace", "-5", key=owner),
        1,
        "grace",
    )

    closed = f"http://127.0.0.1:{free_port()}/mcp"
    server = json.loads(
        stack.run(
            "workspace", "server", "add", stack.slug, "--name", "Scoped", "--url", closed, "--json", key=owner
        ).stdout
    )
    scoped = stack.run(
        "workspace",
        "token",
        "create",
        stack.slug,
        "--name",
        "S",
        "--scope",
        f"{server['id']}:add,echo",
        "--json",
        key=owner,
    )
    assert json.loads(scoped.stdout)["token"]["scopes"] == {str(server["id"]): ["add", "echo"]}
    assert_one_line_error(
        stack.run("workspace", "token", "create", stack.slug, "--name", "S", "--scope", "github", key=owner),
        2,
        "--scope",
    )
    assert_one_line_error(
        stack.run("workspace", "token", "create", stack.slug, "--name", "S", "--scope", "999999", key=owner),
        1,
        "scopes",
    )


def test_a_url_with_a_key_goes_in_by_environment_and_never_comes_out(stack: Stack) -> None:
    from tests.e2e.upstreams import start_python_upstream

    owner, key, query_key = stack.owner_key, "sk-live-Qm9vYmFyQmF6-4711", "tok3n-Zq8Xw"
    path = f"/{key}/mcp"
    upstream = start_python_upstream("--path", path)
    try:
        url = f"http://127.0.0.1:{upstream.port}{path}?api_key={query_key}"
        shown = f"http://127.0.0.1:{upstream.port}/••••/mcp?api_key=••••"
        added = stack.run(
            "workspace", "server", "add", stack.slug, "--name", "Keyed", "--url-env", "KEYED_URL", "--json",
            key=owner, KEYED_URL=url,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        server_id = str(json.loads(added.stdout)["id"])
        outputs = [added.stdout]
        listed = stack.run("workspace", "server", "list", stack.slug, key=owner)
        listed_json = stack.run("workspace", "server", "list", stack.slug, "--json", key=owner)
        tested = stack.run("workspace", "server", "test", stack.slug, server_id, key=owner)
        activity = stack.run("workspace", "activity", stack.slug, "--json", key=owner)
        outputs += [r.stdout + r.stderr for r in (listed, listed_json, tested, activity)]
        assert json.loads(added.stdout)["url"] == shown and shown in listed.stdout
        assert shown in [row["url"] for row in json.loads(listed_json.stdout)]
        assert tested.returncode == 0 and "Connected to Keyed" in tested.stdout, tested.stderr
        outputs.append(stack.server.log.read_text(errors="replace"))
        assert not [s for s in (key, query_key) for text in outputs if s in text]
        assert stack.run("workspace", "server", "remove", stack.slug, server_id, key=owner).returncode == 0
    finally:
        upstream.stop()
    both = stack.run(
        "workspace",
        "server",
        "add",
        stack.slug,
        "--name",
        "X",
        "--url",
        url,
        "--url-env",
        "KEYED_URL",
        key=owner,
    )
    assert_one_line_error(both, 1, "--url-env")
    assert_one_line_error(
        stack.run("workspace", "server", "add", stack.slug, "--name", "X", key=owner), 1, "--url"
    )
    unset = stack.run(
        "workspace", "server", "add", stack.slug, "--name", "X", "--url-env", "NOPE_UNSET", key=owner
    )
    assert_one_line_error(unset, 1, "NOPE_UNSET")
