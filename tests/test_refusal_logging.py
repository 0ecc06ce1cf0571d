"""Expected refusals (a member's 403, a stranger's 404, CSRF failures, 429s, a bad Host) log one line and no
traceback; an unexpected error still logs its traceback."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import Client

import gateway.dashboard
from tests.conftest import Team, login
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db
NEW_SERVER = "/workspaces/acme-tools/servers/new/"


def request_lines(caplog: Any) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "django.request" or r.name.startswith("django.security")]


def one_line(caplog: Any, status: int, starts: str) -> logging.LogRecord:
    lines = request_lines(caplog)
    assert len(lines) == 1, [r.getMessage() for r in lines]
    record = lines[0]
    assert record.getMessage().startswith(starts), record.getMessage()
    assert getattr(record, "status_code", None) == status
    assert record.exc_info is None and record.exc_text is None
    assert "Traceback" not in caplog.text
    return record


def test_a_members_403_is_one_line(client: Client, team: Team, caplog: Any) -> None:
    login(client, team.bob)
    with caplog.at_level(logging.INFO):
        assert client.post(NEW_SERVER, {}).status_code == 403
    assert one_line(caplog, 403, "Forbidden (Permission denied): /workspaces/acme-tools/servers/new/")


def test_a_strangers_404_is_one_line(client: Client, team: Team, caplog: Any) -> None:
    login(client, team.charlie)
    with caplog.at_level(logging.INFO):
        assert client.get(NEW_SERVER).status_code == 404
    one_line(caplog, 404, "Not Found: /workspaces/acme-tools/servers/new/")


def test_a_csrf_failure_is_one_line(csrf_client: Client, team: Team, caplog: Any) -> None:
    with caplog.at_level(logging.INFO):
        response = csrf_client.post("/accounts/login/", {"username": "a@example.com", "password": "x"})
    assert response.status_code == 403
    one_line(caplog, 403, "Forbidden (CSRF cookie not set.)")


def test_a_429_is_one_line(client: Client, team: Team, settings: Any, caplog: Any) -> None:
    settings.LOGIN_RATE = "1/h"
    client.post("/accounts/login/", {"username": "alice@example.com", "password": "wrong"})
    caplog.clear()
    with caplog.at_level(logging.INFO):
        response = client.post("/accounts/login/", {"username": "alice@example.com", "password": PASSWORD})
    assert response.status_code == 429
    one_line(caplog, 429, "Too Many Requests: /accounts/login/")


def test_a_disallowed_host_is_one_line(client: Client, caplog: Any) -> None:
    with caplog.at_level(logging.INFO):
        assert client.get("/accounts/login/", HTTP_HOST="evil.example").status_code == 400
    record = one_line(caplog, 400, "Invalid HTTP_HOST header: 'evil.example'")
    assert record.name == "django.security.DisallowedHost"


def test_an_unexpected_error_keeps_its_traceback(
    team: Team, caplog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gateway.dashboard, "membership_or_404", broken)
    client = login(Client(raise_request_exception=False), team.alice)
    with caplog.at_level(logging.INFO):
        assert client.get("/workspaces/acme-tools/servers/").status_code == 500
    errors = [r for r in request_lines(caplog) if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "Traceback" in caplog.text and "RuntimeError: a bug" in caplog.text
