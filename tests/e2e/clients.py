"""The official MCP SDK client of the end-to-end tests, connected to a gateway URL with a workspace token."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


@asynccontextmanager
async def sdk_client(
    url: str,
    token: str,
    *,
    mode: str = "legacy",
    message_handler: Callable[[Any], Awaitable[None]] | None = None,
    read_timeout: float = 60.0,
) -> AsyncIterator[Client]:
    """An SDK ``Client`` over streamable HTTP (``mode``: "legacy", "2026-07-28" or "auto"), its bearer token
    on every request; ``message_handler`` gets the notifications the server sends."""
    async with (
        httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30.0, read=read_timeout)
        ) as http,
        Client(
            streamable_http_client(url, http_client=http), mode=mode, message_handler=message_handler
        ) as client,
    ):
        yield client
