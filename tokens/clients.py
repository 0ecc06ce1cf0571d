"""Ready-to-paste client configurations for a freshly created token."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from workspaces.models import Workspace


def gateway_url(workspace: Workspace, base_url: str) -> str:
    return f"{base_url.rstrip('/')}{workspace.gateway_path}"


def mcp_json(workspace: Workspace, raw: str, base_url: str) -> dict[str, object]:
    """The product's ``mcp_json`` block (Cursor's ``~/.cursor/mcp.json`` takes it as it is)."""
    return {
        "mcpServers": {
            workspace.slug: {
                "url": gateway_url(workspace, base_url),
                "headers": {"Authorization": f"Bearer {raw}"},
            }
        }
    }


@dataclass(frozen=True)
class ClientSnippet:
    client: str
    where: str
    text: str


def client_snippets(workspace: Workspace, raw: str, base_url: str) -> list[ClientSnippet]:
    url = gateway_url(workspace, base_url)
    claude_desktop = {
        "mcpServers": {
            workspace.slug: {
                "command": "npx",
                "args": ["-y", "mcp-remote", url, "--header", "Authorization:${AEROSTACK_AUTH}"],
                "env": {"AEROSTACK_AUTH": f"Bearer {raw}"},
            }
        }
    }
    vscode = {
        "servers": {
            workspace.slug: {"type": "http", "url": url, "headers": {"Authorization": f"Bearer {raw}"}}
        }
    }
    claude_code = shlex.join(
        [
            "claude",
            "mcp",
            "add",
            "--transport",
            "http",
            workspace.slug,
            url,
            "--header",
            f"Authorization: Bearer {raw}",
        ]
    )
    return [
        ClientSnippet(
            "Claude Desktop",
            "Settings → Developer → Edit Config (claude_desktop_config.json), through mcp-remote",
            json.dumps(claude_desktop, indent=2),
        ),
        ClientSnippet(
            "Cursor",
            "~/.cursor/mcp.json (or .cursor/mcp.json in a project)",
            json.dumps(mcp_json(workspace, raw, base_url), indent=2),
        ),
        ClientSnippet("VS Code", ".vscode/mcp.json in your project", json.dumps(vscode, indent=2)),
        ClientSnippet("Claude Code", "run in a terminal", claude_code),
    ]
