"""The CSV and JSON Lines exports of the activity log, parsed back and compared field by field."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import pytest
from django.test import Client

from gateway.services import server_create
from tests.conftest import Team, login
from tests.factories import make_token
from tests.gateway.conftest import SECRET
from tests.workspaces.test_activity_log import every_action
from workspaces import activity
from workspaces.models import AuditEvent
from workspaces.services import audit_record

pytestmark = pytest.mark.django_db
CSV_URL = "/workspaces/acme-tools/activity/export.csv"
JSONL_URL = "/workspaces/acme-tools/activity/export.jsonl"


def _body(response: Any) -> str:
    assert response.status_code == 200 and response.streaming
    return b"".join(response.streaming_content).decode("utf-8")


def _expected(events: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": e.pk,
            "created_at": e.created_at.isoformat(),
            "action": e.action,
            "actor_id": e.actor_id,
            "actor": e.actor.username if e.actor else None,
            "subject_id": e.subject_id,
            "subject": e.subject.username if e.subject else None,
            "target": e.target,
            "summary": activity.sentence(e),
            "details": e.details,
        }
        for e in events
    ]


def _workspace_events(team: Team) -> Any:
    return AuditEvent.objects.filter(workspace=team.workspace).order_by("-created_at", "-id")


def test_the_jsonl_export_holds_every_event_field_by_field(client: Client, team: Team) -> None:
    every_action(team)
    response = login(client, team.alice).get(JSONL_URL)
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="aerostack-acme-tools-activity-')
    lines = _body(response).splitlines()
    records = [json.loads(line) for line in lines]
    assert records == _expected(_workspace_events(team))
    assert len(records) == 20


def test_the_csv_export_holds_every_event_field_by_field(client: Client, team: Team) -> None:
    every_action(team)
    response = login(client, team.amy).get(CSV_URL)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(_body(response))))
    expected = _expected(_workspace_events(team))
    assert len(rows) == len(expected) == 20
    for row, want in zip(rows, expected, strict=True):
        assert list(row) == activity.EXPORT_FIELDS
        assert row["id"] == str(want["id"]) and row["created_at"] == want["created_at"]
        assert row["action"] == want["action"] and row["target"] == want["target"]
        assert row["actor_id"] == ("" if want["actor_id"] is None else str(want["actor_id"]))
        assert row["actor"] == (want["actor"] or "")
        assert row["subject_id"] == ("" if want["subject_id"] is None else str(want["subject_id"]))
        assert row["subject"] == (want["subject"] or "")
        assert row["summary"] == want["summary"]
        assert json.loads(row["details"]) == want["details"]


def test_the_exports_hold_what_is_filtered(client: Client, team: Team) -> None:
    every_action(team)
    login(client, team.alice)
    query = {"action": "token.revoke", "actor": team.amy.user_id}
    records = [json.loads(line) for line in _body(client.get(JSONL_URL, query)).splitlines()]
    assert [r["action"] for r in records] == ["token.revoke"]
    rows = list(csv.DictReader(io.StringIO(_body(client.get(CSV_URL, query)))))
    assert [r["action"] for r in rows] == ["token.revoke"]
    page = client.get("/workspaces/acme-tools/activity/", query).content.decode()
    assert f'href="{CSV_URL}?action=token.revoke&amp;actor={team.amy.user_id}"' in page


def test_members_export_only_the_events_about_themselves(client: Client, team: Team) -> None:
    every_action(team)
    records = [json.loads(line) for line in _body(login(client, team.bob).get(JSONL_URL)).splitlines()]
    assert records and all(team.bob.user_id in (r["actor_id"], r["subject_id"]) for r in records)


def test_bad_filters_get_400_not_an_export(client: Client, team: Team) -> None:
    response = login(client, team.alice).get(CSV_URL, {"actor": "abc"})
    assert response.status_code == 400 and not response.streaming


def test_csv_cells_cannot_run_as_spreadsheet_formulas(client: Client, team: Team) -> None:
    audit_record(
        workspace=team.workspace, actor=team.alice.user, action="server.delete", target="=HYPERLINK(1)"
    )
    rows = list(csv.DictReader(io.StringIO(_body(login(client, team.alice).get(CSV_URL)))))
    assert rows[0]["target"] == "'=HYPERLINK(1)"
    record = json.loads(_body(client.get(JSONL_URL)).splitlines()[0])
    assert record["target"] == "=HYPERLINK(1)"  # JSON Lines keeps the raw value for machines


def test_the_export_streams_in_pieces(client: Client, team: Team) -> None:
    from workspaces.activity import EXPORT_PIECE_CHARS

    for n in range(1200):
        audit_record(
            workspace=team.workspace, actor=team.alice.user, action="server.delete", target=f"server:s{n}"
        )
    response = login(client, team.alice).get(JSONL_URL)
    pieces = list(response.streaming_content)
    assert len(pieces) > 3  # never the whole log in one piece
    assert all(len(piece) < EXPORT_PIECE_CHARS + 1000 for piece in pieces)
    lines = b"".join(pieces).decode().splitlines()
    assert len(lines) == 1200 and json.loads(lines[0])["target"] == "server:s1199"
    assert all(piece.endswith(b"\n") for piece in pieces)  # pieces end between lines


def test_audit_details_never_hold_secrets(client: Client, team: Team) -> None:
    """Raw tokens and upstream credentials appear nowhere in the log, the page or either export."""
    server_create(
        workspace=team.workspace,
        actor=team.alice.user,
        name="Python tools",
        slug="py",
        url="https://py.example.com/mcp",
        credential_kind="bearer",
        credential=SECRET,
    )
    raws = [make_token(team.bob).raw]
    every_action(team)
    login(client, team.alice)
    body = client.post(
        "/workspaces/acme-tools/tokens/new/", {"name": "Alice CI", "expires": "never"}
    ).content.decode()
    raws += re.findall(r"mwt_[0-9A-Za-z]{36}", body)[:1]
    assert len(raws) == 2
    texts = [
        repr(list(AuditEvent.objects.values())),
        client.get("/workspaces/acme-tools/activity/").content.decode(),
        _body(client.get(CSV_URL)),
        _body(client.get(JSONL_URL)),
    ]
    for text in texts:
        assert "token.create" in text  # the search is real
        for secret in [SECRET, *raws, *(raw[4:-6] for raw in raws)]:
            assert secret not in text


def test_it_gives_strangers_404_and_anonymous_users_the_login(client: Client, team: Team) -> None:
    assert client.get(CSV_URL).status_code == 302
    login(client, team.charlie)
    assert client.get(CSV_URL).status_code == 404 and client.get(JSONL_URL).status_code == 404


def test_it_refuses_post(client: Client, team: Team) -> None:
    assert login(client, team.alice).post(JSONL_URL).status_code == 405


def test_audit_record_refuses_a_raw_token(team: Team) -> None:
    raw = make_token(team.bob).raw
    for bad in (
        {"details": {"note": f"pasted {raw} here"}},
        {"details": {"nested": [{"v": raw}]}},
        {"target": raw},
    ):
        with pytest.raises(ValueError, match="raw workspace token"):
            audit_record(workspace=team.workspace, actor=team.alice.user, action="token.create", **bad)  # type: ignore[arg-type]
    assert not AuditEvent.objects.filter(details__has_key="note").exists()
