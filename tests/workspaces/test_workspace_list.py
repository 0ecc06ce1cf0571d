from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import Team, login
from workspaces.models import AuditEvent, Member, Workspace

pytestmark = pytest.mark.django_db
URL = "/workspaces/"


def test_it_lists_only_my_workspaces(client: Client, team: Team) -> None:
    response = login(client, team.bob).get(URL)
    assert response.status_code == 200
    assert b"Acme Tools" in response.content and b"Charlie" not in response.content


def test_it_creates_a_workspace_with_me_as_owner(client: Client, team: Team) -> None:
    response = login(client, team.bob).post(URL, {"name": "Data Team", "description": "Our tools"})
    workspace = Workspace.objects.get(name="Data Team")
    assert response.status_code == 302 and response["Location"] == f"/workspaces/{workspace.slug}/"
    assert workspace.slug == "data-team" and workspace.description == "Our tools"
    assert Member.objects.get(workspace=workspace).role == Member.Role.OWNER
    assert AuditEvent.objects.filter(
        workspace=workspace, action="workspace.create", actor=team.bob.user
    ).exists()


def test_it_suffixes_a_colliding_slug(client: Client, team: Team) -> None:
    login(client, team.bob)
    client.post(URL, {"name": "Acme Tools"})
    client.post(URL, {"name": "acme tools!"})
    assert sorted(Workspace.objects.filter(name__iexact="acme tools").values_list("slug", flat=True)) == [
        "acme-tools",
        "acme-tools-2",
    ]
    assert Workspace.objects.filter(slug="acme-tools-3").exists()


def test_it_gives_unicode_only_names_a_usable_slug(client: Client, team: Team) -> None:
    login(client, team.bob).post(URL, {"name": "数据"})
    assert Workspace.objects.get(name="数据").slug == "workspace"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "Give the workspace a name."),
        ("a", "at least 2"),
        (" b ", "at least 2"),
        ("x" * 101, "at most 100"),
    ],
)
def test_it_shows_bad_names_beside_the_field(client: Client, team: Team, name: str, message: str) -> None:
    response = login(client, team.bob).post(URL, {"name": name})
    assert response.status_code == 400
    assert 'id="id_name_error"' in response.content.decode() and message in response.content.decode()
    assert Workspace.objects.count() == 2


def test_it_escapes_names(client: Client, team: Team) -> None:
    login(client, team.bob).post(URL, {"name": "<script>alert(1)</script>"})
    body = client.get(URL).content.decode()
    assert "<script>alert(1)</script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_it_redirects_anonymous_users_to_log_in(client: Client, db: None) -> None:
    response = client.get(URL)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")


def test_it_refuses_other_methods(client: Client, team: Team) -> None:
    assert login(client, team.bob).delete(URL).status_code == 405
    assert client.put(URL).status_code == 405


def test_it_enforces_csrf(csrf_client: Client, team: Team) -> None:
    response = login(csrf_client, team.bob).post(URL, {"name": "Sneaky"})
    assert response.status_code == 403 and not Workspace.objects.filter(name="Sneaky").exists()
