"""A small MCP client over Django's test client, for endpoint tests."""

from __future__ import annotations

import json
from typing import Any

from django.test import Client

from gateway import protocol

ACCEPT = "application/json, text/event-stream"


class McpTestClient:
    def __init__(self, raw_token: str | None, slug: str = "acme-tools", client: Client | None = None) -> None:
        self.raw_token = raw_token
        self.slug = slug
        self.client = client or Client()
        self.session_id: str | None = None
        self._next_id = 0

    def headers(self, **extra: str) -> dict[str, str]:
        headers = {"HTTP_ACCEPT": ACCEPT, "HTTP_MCP_PROTOCOL_VERSION": "2025-11-25"}
        if self.raw_token is not None:
            headers["HTTP_AUTHORIZATION"] = f"Bearer {self.raw_token}"
        if self.session_id:
            headers["HTTP_MCP_SESSION_ID"] = self.session_id
        headers.update(extra)
        return headers

    def post_raw(self, body: bytes | str, **extra: str) -> Any:
        return self.client.post(
            f"/ws/{self.slug}", body, content_type="application/json", **self.headers(**extra)
        )

    def post(self, message: dict[str, Any], **extra: str) -> Any:
        return self.post_raw(json.dumps(message), **extra)

    def request(self, method: str, params: dict[str, Any] | None = None, **extra: str) -> Any:
        self._next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            message["params"] = params
        return self.post(message, **extra)

    def initialize(self, version: str = "2025-11-25") -> Any:
        response = self.request(
            "initialize",
            {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
        )
        self.session_id = response.get("Mcp-Session-Id")
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return response


def messages_of(response: Any) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a gateway reply, JSON or SSE."""
    if response.streaming:
        parser = protocol.SSEParser()
        events = []
        for chunk in response.streaming_content:
            events.extend(parser.feed(chunk))
        return [json.loads(event.data) for event in events]
    return [json.loads(response.content)]
