"""gateway 0006_server_url_encrypted: existing servers' URLs become ciphertext plus a masked display form,
and what earlier errors quoted of their keys is masked; backwards restores the plain column, and refuses
(losing nothing) when the keys can no longer decrypt."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from gateway.crypto import decrypt
from tests.migrating import Migrator

pytestmark = pytest.mark.django_db(transaction=True)
BEFORE = [("gateway", "0005_merge_features_and_usage")]
AFTER = [("gateway", "0006_server_url_encrypted")]
KEY = "sk-live-Qm9vYmFyQmF6-4711"
KEYED = f"https://mcp.example.com/{KEY}/mcp?api_key=tok3n-Zq8Xw"
PLAIN = "http://127.0.0.1:9/mcp"


def _raw_rows() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM gateway_server")
        return repr(cursor.fetchall())


@pytest.fixture
def old_servers(migrator: Migrator) -> Migrator:
    """Two servers stored by the code before the migration (plain ``url`` column)."""
    old = migrator.migrate(BEFORE)
    workspace = old.get_model("workspaces", "Workspace").objects.create(name="W", slug="w")
    server = old.get_model("gateway", "Server")
    quoted = f"keyed refused initialize: no such key in /{KEY}/mcp (-32001)"
    keyed = server.objects.create(
        workspace=workspace, slug="keyed", name="Keyed", url=KEYED, last_error=quoted
    )
    server.objects.create(workspace=workspace, slug="plain", name="Plain", url=PLAIN)
    old.get_model("gateway", "UsageEvent").objects.create(
        workspace=workspace, server=keyed, created_at=timezone.now(), outcome="upstream_error", detail=quoted
    )
    assert KEY in _raw_rows()  # the search below looks at a row that held the key
    return migrator


def test_forwards_encrypts_every_url_and_backwards_restores_it(old_servers: Migrator) -> None:
    new = old_servers.migrate(AFTER)
    assert KEY not in _raw_rows() and "tok3n-Zq8Xw" not in _raw_rows()
    assert KEY not in repr(list(new.get_model("gateway", "UsageEvent").objects.values()))
    rows = {s.slug: s for s in new.get_model("gateway", "Server").objects.all()}
    assert rows["keyed"].last_error == "keyed refused initialize: no such key in /••••/mcp (-32001)"
    assert {slug: decrypt(s.url_encrypted) for slug, s in rows.items()} == {"keyed": KEYED, "plain": PLAIN}
    assert {slug: s.url_display for slug, s in rows.items()} == {
        "keyed": "https://mcp.example.com/••••/mcp?api_key=••••",
        "plain": PLAIN,
    }
    back = old_servers.migrate(BEFORE)
    assert dict(back.get_model("gateway", "Server").objects.values_list("slug", "url")) == {
        "keyed": KEYED,
        "plain": PLAIN,
    }


def test_backwards_refuses_when_the_keys_changed_and_loses_nothing(
    old_servers: Migrator, settings: Any
) -> None:
    old_servers.migrate(AFTER)
    original = settings.ENCRYPTION_KEYS
    settings.ENCRYPTION_KEYS = ["bm90LXRoZS1rZXktdGhhdC1lbmNyeXB0ZWQtaXQtMTI="]
    with pytest.raises(RuntimeError, match="the upstream URL cannot be decrypted"):
        old_servers.migrate(BEFORE)
    settings.ENCRYPTION_KEYS = original
    rows = old_servers.migrate(AFTER).get_model("gateway", "Server").objects.order_by("slug")
    assert [decrypt(s.url_encrypted) for s in rows] == [KEYED, PLAIN]
