from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db
URL = "/accounts/signup/"
User = get_user_model()


def test_it_signs_up_and_logs_in(client: Client) -> None:
    response = client.post(
        URL,
        {"email": "New@Example.com", "password1": "a-long-unusual-pass", "password2": "a-long-unusual-pass"},
    )
    assert response.status_code == 302 and response["Location"] == "/workspaces/"
    user = User.objects.get()
    assert user.username == "new@example.com" and user.check_password("a-long-unusual-pass")
    assert client.get("/workspaces/").status_code == 200


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (
            {"email": "not-an-email", "password1": "a-long-unusual-pass", "password2": "a-long-unusual-pass"},
            "email",
            "valid email",
        ),
        ({"email": "a@example.com", "password1": "short", "password2": "short"}, "password1", "too short"),
        (
            {"email": "a@example.com", "password1": "password123", "password2": "password123"},
            "password1",
            "too common",
        ),
        (
            {"email": "a@example.com", "password1": "a-long-unusual-pass", "password2": "other-long-pass"},
            "password2",
            "differ",
        ),
    ],
)
def test_it_shows_bad_input_beside_the_field(
    client: Client, data: dict[str, str], field: str, message: str
) -> None:
    response = client.post(URL, data)
    assert response.status_code == 400
    assert f'id="id_{field}_error"' in response.content.decode() and message in response.content.decode()
    assert not User.objects.exists()


def test_it_refuses_a_taken_email(client: Client) -> None:
    User.objects.create_user(username="a@example.com", password="x")
    response = client.post(
        URL,
        {"email": "A@example.com", "password1": "a-long-unusual-pass", "password2": "a-long-unusual-pass"},
    )
    assert response.status_code == 400 and "already exists" in response.content.decode()


def test_it_can_be_closed(client: Client, settings) -> None:  # type: ignore[no-untyped-def]
    settings.SIGNUP_OPEN = False
    assert client.get(URL).status_code == 404
    assert (
        client.post(
            URL,
            {
                "email": "a@example.com",
                "password1": "a-long-unusual-pass",
                "password2": "a-long-unusual-pass",
            },
        ).status_code
        == 404
    )
    assert not User.objects.exists()
    assert "Sign up" not in client.get("/accounts/login/").content.decode()


def test_it_refuses_other_methods(client: Client) -> None:
    assert client.put(URL).status_code == 405


def test_it_enforces_csrf(csrf_client: Client) -> None:
    response = csrf_client.post(
        URL,
        {"email": "a@example.com", "password1": "a-long-unusual-pass", "password2": "a-long-unusual-pass"},
    )
    assert response.status_code == 403 and not User.objects.exists()
