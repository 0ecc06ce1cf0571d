"""The URL guard's refusals name the host a user gave, never the internal address it resolved to: not in the
Servers form, not to gateway clients. The operator's log has the address."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
from django.test import Client

from gateway.netguard import UpstreamAddressRefused, check_upstream_url
from gateway.services import server_create
from tests.conftest import Team, login
from tests.factories import make_token
from tests.gateway.conftest import error_beside, form_data
from tests.gateway.helpers import McpTestClient, messages_of
from tests.live import free_port

LOCALHOST_ADDRESSES = {str(info[4][0]) for info in socket.getaddrinfo("localhost", 80)}


def _names_no_address(text: str) -> None:
    for address in LOCALHOST_ADDRESSES | {"127.0.0.1", "::1"}:
        assert address not in text, text


def test_the_refusal_names_the_host_but_not_its_address(settings: Any, caplog: Any) -> None:
    settings.ALLOW_PRIVATE_UPSTREAMS = False
    with (
        caplog.at_level(logging.INFO, logger="gateway.netguard"),
        pytest.raises(UpstreamAddressRefused) as refused,
    ):
        check_upstream_url("http://localhost:8080/mcp")
    message = str(refused.value)
    assert message.startswith("localhost resolves to a private, loopback or link-local address.")
    _names_no_address(message)
    # The operator still learns where it pointed.
    logged = [r.getMessage() for r in caplog.records if r.name == "gateway.netguard"]
    assert any(address in line for line in logged for address in LOCALHOST_ADDRESSES), logged


@pytest.mark.django_db
def test_the_servers_form_shows_no_resolved_address(client: Client, team: Team, settings: Any) -> None:
    settings.ALLOW_PRIVATE_UPSTREAMS = False
    url = f"/workspaces/{team.workspace.slug}/servers/new/"
    response = login(client, team.alice).post(url, form_data(url="http://localhost:9/mcp"))
    assert response.status_code == 400
    error = error_beside(response, "url")
    assert "localhost resolves to a private" in error
    _names_no_address(response.content.decode())


@pytest.mark.django_db
def test_gateway_clients_get_no_resolved_address(team: Team, settings: Any) -> None:
    # Stored while private upstreams were allowed, refused now that they are not.
    server_create(
        workspace=team.workspace,
        actor=team.alice.user,
        name="Internal",
        slug="internal",
        url=f"http://localhost:{free_port()}/mcp",
    )
    settings.ALLOW_PRIVATE_UPSTREAMS = False
    client = McpTestClient(make_token(team.bob).raw)
    assert client.initialize().status_code == 200
    listed = client.request("tools/list")
    assert listed.status_code == 200 and listed.json()["result"]["tools"] == []
    called = client.request("tools/call", {"name": "internal__anything", "arguments": {}})
    final = messages_of(called)[-1]
    text = final["result"]["content"][0]["text"]
    assert final["result"]["isError"] is True and "localhost resolves to a private" in text
    _names_no_address(called.content.decode())
