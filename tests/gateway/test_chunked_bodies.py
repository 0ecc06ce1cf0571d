"""Chunked request bodies on the WSGI path: no Content-Length, the server marks the end of wsgi.input
(``wsgi.input_terminated``, as gunicorn does). The live test over real HTTP is in tests/e2e."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.signals import request_started
from django.db import close_old_connections

from tests.conftest import Team
from tests.e2e.gateway_stack import INITIALIZE
from tests.factories import make_token

pytestmark = pytest.mark.django_db


class TrickleStream(io.BytesIO):
    """Like a de-chunked network body: read() returns at most a few bytes at a time."""

    def read(self, size: int | None = -1) -> bytes:
        return super().read(7 if size is None or size < 0 else min(size, 7))


def call_chunked(body: bytes, token: str, **extra: str) -> tuple[int, dict[str, str], bytes]:
    from aerostack.wsgi import application

    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/ws/acme-tools",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "HTTP_HOST": "localhost",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "HTTP_ACCEPT": "application/json, text/event-stream",
        "CONTENT_TYPE": "application/json",
        "wsgi.input": TrickleStream(body),
        "wsgi.input_terminated": True,
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        **extra,
    }
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        captured["status"], captured["headers"] = int(status.split()[0]), dict(headers)

    request_started.disconnect(close_old_connections)  # keep the test's transaction, as the test client does
    try:
        content = b"".join(application(environ, start_response))
    finally:
        request_started.connect(close_old_connections)
    return captured["status"], captured["headers"], content


def test_it_reads_a_chunked_body(team: Team) -> None:
    status, headers, content = call_chunked(json.dumps(INITIALIZE).encode(), make_token(team.bob).raw)
    assert status == 200, content
    assert json.loads(content)["result"]["protocolVersion"] == "2025-11-25"
    assert headers["Mcp-Session-Id"]


def test_it_caps_a_chunked_body_with_413(team: Team, settings: Any) -> None:
    settings.GATEWAY_MAX_BODY_BYTES = 2048
    padded = {**INITIALIZE, "params": {**INITIALIZE["params"], "pad": "x" * 4096}}
    status, _, content = call_chunked(json.dumps(padded).encode(), make_token(team.bob).raw)
    assert status == 413 and json.loads(content)["error"]["code"] == -32600


def test_a_body_just_under_the_cap_passes(team: Team, settings: Any) -> None:
    settings.GATEWAY_MAX_BODY_BYTES = 2048
    body = json.dumps(INITIALIZE).encode()
    body = body[:-1] + b"," + b'"p":"' + b"x" * (2048 - len(body) - 7) + b'"}'
    assert len(body) == 2048
    status, _, content = call_chunked(body, make_token(team.bob).raw)
    assert status == 200, content


def test_an_empty_chunked_body_is_a_parse_error(team: Team) -> None:
    status, _, content = call_chunked(b"", make_token(team.bob).raw)
    assert status == 400 and json.loads(content)["error"]["code"] == -32700
