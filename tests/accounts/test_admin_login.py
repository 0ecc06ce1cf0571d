"""/admin/login/ is throttled exactly like the dashboard's log-in: failed attempts per client IP, one budget
shared by both forms, successful log-ins never counted."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.conftest import Team
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db
URL = "/admin/login/"
ROOT_PASSWORD = "a-long-admin-password"


@pytest.fixture
def root(db: None) -> Any:
    return get_user_model().objects.create_superuser("root@example.com", "root@example.com", ROOT_PASSWORD)


def _try(client: Client, password: str, **extra: str) -> Any:
    return client.post(
        URL, {"username": "root@example.com", "password": password, "next": "/admin/"}, **extra
    )


def test_it_logs_an_admin_in(client: Client, root: Any) -> None:
    response = _try(client, ROOT_PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_it_refuses_a_wrong_password_with_400(client: Client, root: Any) -> None:
    response = _try(client, "wrong")
    assert response.status_code == 400 and "correct username and password" in response.content.decode()


def test_it_throttles_failed_attempts_per_ip(client: Client, root: Any, settings: Any) -> None:
    settings.LOGIN_RATE = "3/h"
    for _ in range(3):
        assert _try(client, "wrong").status_code == 400
    blocked = _try(client, ROOT_PASSWORD)
    assert blocked.status_code == 429 and int(blocked["Retry-After"]) >= 1
    assert _try(client, ROOT_PASSWORD, REMOTE_ADDR="10.9.9.9").status_code == 302  # another IP


def test_it_shares_one_budget_with_the_dashboard_log_in(
    client: Client, root: Any, team: Team, settings: Any
) -> None:
    settings.LOGIN_RATE = "4/h"
    for _ in range(2):
        assert (
            client.post("/accounts/login/", {"username": "alice@example.com", "password": "x"}).status_code
            == 400
        )
        assert _try(client, "wrong").status_code == 400
    assert _try(client, ROOT_PASSWORD).status_code == 429
    dashboard = client.post("/accounts/login/", {"username": "alice@example.com", "password": PASSWORD})
    assert dashboard.status_code == 429


def test_it_does_not_count_successful_log_ins(root: Any, settings: Any) -> None:
    settings.LOGIN_RATE = "2/h"
    for _ in range(4):
        assert _try(Client(), ROOT_PASSWORD).status_code == 302


def test_a_non_staff_account_counts_as_a_failure(client: Client, team: Team, settings: Any) -> None:
    settings.LOGIN_RATE = "2/h"
    for _ in range(2):
        response = client.post(URL, {"username": "alice@example.com", "password": PASSWORD})
        assert response.status_code == 400
    assert client.post(URL, {"username": "alice@example.com", "password": PASSWORD}).status_code == 429


def test_it_still_shows_the_form_and_keeps_csrf(csrf_client: Client, root: Any) -> None:
    assert csrf_client.get(URL).status_code == 200
    assert _try(csrf_client, ROOT_PASSWORD).status_code == 403


def test_a_blocked_attempt_logs_one_line(client: Client, root: Any, settings: Any, caplog: Any) -> None:
    settings.LOGIN_RATE = "1/h"
    _try(client, "wrong")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert _try(client, "wrong").status_code == 429
    lines = [r for r in caplog.records if r.name == "django.request"]
    assert [r.getMessage() for r in lines] == ["Too Many Requests: /admin/login/"]
    assert lines[0].exc_info is None and ROOT_PASSWORD not in caplog.text
