"""The upstream credential goes in once and never comes out: not in a page, not in the database in clear."""

from __future__ import annotations

import pytest
from django.test import Client

from gateway.models import Server
from tests.conftest import Team, login
from tests.e2e.upstreams import RunningUpstream
from tests.gateway.conftest import SECRET, database_text, form_data
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("kind", ["bearer", "header"])
def test_it_never_shows_or_stores_the_plain_credential(
    client: Client, team: Team, upstream: RunningUpstream, kind: str
) -> None:
    login(client, team.alice)
    base = "/workspaces/acme-tools/servers"
    data = form_data(url=upstream.url, credential_kind=kind, credential_header="X-API-Key", credential=SECRET)
    bodies = [client.post(f"{base}/new/", data, follow=True).content.decode()]
    server = Server.objects.get()
    bodies.append(
        client.post(f"{base}/new/", data | {"timeout_seconds": "0"}).content.decode()
    )  # re-rendered
    for page in ("", "new/", f"{server.pk}/", f"{server.pk}/edit/", f"{server.pk}/delete/"):
        bodies.append(client.get(f"{base}/{page}").content.decode())
    bodies.append(client.post(f"{base}/{server.pk}/test/", follow=True).content.decode())
    bodies.append(client.post(f"{base}/{server.pk}/edit/", data | {"name": ""}).content.decode())
    bodies.append(client.post(f"{base}/{server.pk}/edit/", data, follow=True).content.decode())
    assert all(SECRET not in body for body in bodies)
    assert all(server.credential_encrypted not in body for body in bodies)
    assert "A credential is stored" in bodies[4]
    assert SECRET not in database_text() and SECRET not in repr(list(AuditEvent.objects.values()))
    assert Server.objects.get().credential_encrypted  # the search above did look at a stored credential
