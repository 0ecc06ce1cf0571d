"""The Django admin shows tokens and servers read-only, hashes and ciphertexts included or left out."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from gateway.services import server_create
from tests.conftest import Team
from tests.factories import make_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged(team: Team) -> Client:
    get_user_model().objects.create_superuser("root@example.com", "root@example.com", "a-long-admin-password")
    client = Client()
    assert client.login(username="root@example.com", password="a-long-admin-password")
    return client


def test_it_shows_tokens_read_only(admin_client_logged: Client, team: Team) -> None:
    created = make_token(team.alice)
    page = admin_client_logged.get(f"/admin/tokens/token/{created.token.pk}/change/")
    body = page.content.decode()
    assert page.status_code == 200 and created.token.token_hash in body and created.raw not in body
    assert 'name="token_hash"' not in body  # no editable field
    assert admin_client_logged.get("/admin/tokens/token/add/").status_code == 403


def test_it_never_shows_upstream_credentials(admin_client_logged: Client, team: Team) -> None:
    server = server_create(
        workspace=team.workspace,
        actor=team.alice.user,
        name="S",
        slug="s",
        url="https://example.com/mcp",
        credential_kind="bearer",
        credential="admin-should-not-see",
    )
    body = admin_client_logged.get(f"/admin/gateway/server/{server.pk}/change/").content.decode()
    assert "admin-should-not-see" not in body and server.credential_encrypted not in body


def test_it_shows_the_upstream_url_masked(admin_client_logged: Client, team: Team) -> None:
    key = "sk-live-Qm9vYmFyQmF6-4711"
    server = server_create(
        workspace=team.workspace,
        actor=team.alice.user,
        name="S",
        slug="s",
        url=f"https://example.com/{key}/mcp",
    )
    listing = admin_client_logged.get("/admin/gateway/server/").content.decode()
    body = admin_client_logged.get(f"/admin/gateway/server/{server.pk}/change/").content.decode()
    assert "https://example.com/••••/mcp" in listing and "https://example.com/••••/mcp" in body
    assert all(key not in page and server.url_encrypted not in page for page in (listing, body))


def test_it_shows_invites_read_only_without_the_hash(admin_client_logged: Client, team: Team) -> None:
    from workspaces.services import member_invite

    invite = member_invite(
        actor=team.alice, email="dora@example.com", role="member", base_url="http://x"
    ).invite
    listing = admin_client_logged.get("/admin/workspaces/invite/").content.decode()
    assert "dora@example.com" in listing
    page = admin_client_logged.get(f"/admin/workspaces/invite/{invite.pk}/change/")
    assert page.status_code == 200 and invite.secret_hash not in page.content.decode()
    assert admin_client_logged.get("/admin/workspaces/invite/add/").status_code == 403


def test_workspaces_members_and_servers_change_only_through_the_services(
    admin_client_logged: Client, team: Team
) -> None:
    """An admin-site edit would skip the role checks, the last-owner rule, token revocation on every node,
    the catalog invalidation and the audit row."""
    server = server_create(
        workspace=team.workspace, actor=team.alice.user, name="S", slug="s", url="https://example.com/mcp"
    )
    workspace = team.workspace
    member = team.bob
    for path in (
        f"/admin/workspaces/workspace/{workspace.pk}/delete/",
        f"/admin/workspaces/member/{member.pk}/delete/",
        f"/admin/gateway/server/{server.pk}/delete/",
        "/admin/workspaces/workspace/add/",
        "/admin/workspaces/member/add/",
    ):
        assert admin_client_logged.get(path).status_code == 403, path
    page = admin_client_logged.get(f"/admin/workspaces/workspace/{workspace.pk}/change/")
    assert page.status_code == 200 and workspace.name in page.content.decode()
    assert 'name="name"' not in page.content.decode()  # shown, not editable
    changed = admin_client_logged.post(
        f"/admin/workspaces/workspace/{workspace.pk}/change/", {"name": "Renamed", "rate_limit_per_minute": 1}
    )
    assert changed.status_code == 403
    workspace.refresh_from_db()
    assert workspace.name != "Renamed"
