from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import Team, login
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db
URL = "/accounts/password/"


def test_it_changes_the_password_and_keeps_me_logged_in(client: Client, team: Team) -> None:
    response = login(client, team.alice).post(
        URL,
        {
            "old_password": PASSWORD,
            "new_password1": "another-long-secret",
            "new_password2": "another-long-secret",
        },
    )
    assert response.status_code == 302
    team.alice.user.refresh_from_db()
    assert team.alice.user.check_password("another-long-secret")
    assert client.get("/workspaces/").status_code == 200


def test_it_shows_a_wrong_old_password_beside_the_field(client: Client, team: Team) -> None:
    response = login(client, team.alice).post(
        URL,
        {
            "old_password": "nope",
            "new_password1": "another-long-secret",
            "new_password2": "another-long-secret",
        },
    )
    assert response.status_code == 400 and 'id="id_old_password_error"' in response.content.decode()


def test_it_redirects_anonymous_users(client: Client, db: None) -> None:
    assert client.get(URL).status_code == 302


def test_it_enforces_csrf(csrf_client: Client, team: Team) -> None:
    response = login(csrf_client, team.alice).post(
        URL,
        {
            "old_password": PASSWORD,
            "new_password1": "another-long-secret",
            "new_password2": "another-long-secret",
        },
    )
    assert response.status_code == 403
