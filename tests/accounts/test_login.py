from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import Team
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db
URL = "/accounts/login/"


def test_it_logs_in_with_email_in_any_case(client: Client, team: Team) -> None:
    response = client.post(URL, {"username": "Alice@Example.com", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/workspaces/"


def test_it_follows_next_only_to_our_own_pages(client: Client, team: Team) -> None:
    response = client.post(
        URL + "?next=/workspaces/acme-tools/",
        {"username": "alice@example.com", "password": PASSWORD, "next": "/workspaces/acme-tools/"},
    )
    assert response["Location"] == "/workspaces/acme-tools/"
    client.logout()
    response = client.post(
        URL, {"username": "alice@example.com", "password": PASSWORD, "next": "https://evil.example/"}
    )
    assert response["Location"] == "/workspaces/"


def test_it_refuses_a_wrong_password(client: Client, team: Team) -> None:
    response = client.post(URL, {"username": "alice@example.com", "password": "wrong"})
    assert response.status_code == 400 and "correct" in response.content.decode()


def test_it_throttles_failed_attempts_per_ip(client: Client, team: Team, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LOGIN_RATE = "3/h"  # an hour-long window: the test never straddles its turn
    for _ in range(3):
        assert client.post(URL, {"username": "alice@example.com", "password": "wrong"}).status_code == 400
    blocked = client.post(URL, {"username": "alice@example.com", "password": PASSWORD})
    assert blocked.status_code == 429 and int(blocked["Retry-After"]) >= 1
    # Another client IP is not affected.
    other = client.post(URL, {"username": "alice@example.com", "password": PASSWORD}, REMOTE_ADDR="10.9.9.9")
    assert other.status_code == 302


def test_it_does_not_count_successful_logins(client: Client, team: Team, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LOGIN_RATE = "2/h"
    for _ in range(4):
        assert Client().post(URL, {"username": "alice@example.com", "password": PASSWORD}).status_code == 302


def test_it_ignores_forwarded_for_from_untrusted_peers(client: Client, team: Team, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LOGIN_RATE = "2/h"
    for n in range(2):
        client.post(
            URL, {"username": "alice@example.com", "password": "wrong"}, HTTP_X_FORWARDED_FOR=f"1.2.3.{n}"
        )
    assert (
        client.post(
            URL, {"username": "alice@example.com", "password": "wrong"}, HTTP_X_FORWARDED_FOR="5.5.5.5"
        ).status_code
        == 429
    )


def test_it_logs_out_on_post_only(client: Client, team: Team) -> None:
    client.post(URL, {"username": "alice@example.com", "password": PASSWORD})
    assert client.get("/accounts/logout/").status_code == 405
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/workspaces/").status_code == 302


def test_it_enforces_csrf(csrf_client: Client, team: Team) -> None:
    assert csrf_client.post(URL, {"username": "alice@example.com", "password": PASSWORD}).status_code == 403
