"""The WSGI entry point sends /ws/ to the lean gateway chain and everything else to the full one."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.signals import request_started
from django.db import close_old_connections

pytestmark = pytest.mark.django_db


def _call(
    path: str, method: str = "GET", body: bytes = b"", **headers: str
) -> tuple[str, dict[str, str], bytes]:
    from aerostack.wsgi import application

    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "HTTP_HOST": headers.pop("host", "localhost"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
        "wsgi.errors": io.StringIO(),
        **{f"HTTP_{k.upper()}": v for k, v in headers.items()},
    }
    captured: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        captured["status"], captured["headers"] = status, dict(response_headers)

    # As Django's test client does: the test's transaction must survive the request_started signal.
    request_started.disconnect(close_old_connections)
    try:
        content = b"".join(application(environ, start_response))
    finally:
        request_started.connect(close_old_connections)
    return captured["status"], captured["headers"], content


def test_it_serves_the_gateway_through_the_lean_chain() -> None:
    status, headers, content = _call("/ws/nope", "POST", b"{}")
    assert status.startswith("401") and json.loads(content)["error"]["code"] == -32001
    assert "Content-Security-Policy" not in headers  # the dashboard's page headers are not on this chain
    assert "Set-Cookie" not in headers


def test_it_serves_the_dashboard_through_the_full_chain() -> None:
    status, headers, _ = _call("/accounts/login/")
    assert (
        status.startswith("200")
        and "Content-Security-Policy" in headers
        and headers["X-Frame-Options"] == "DENY"
    )


def test_it_still_checks_allowed_hosts_on_the_gateway() -> None:
    status, _, content = _call("/ws/nope", "POST", b"{}", host="evil.example")
    assert status.startswith("400") and json.loads(content)["error"]["message"] == "Host not allowed"
