"""The database going away (or every pooled connection busy) is a retryable gateway error, not a 500, on
every method the gateway serves."""

from __future__ import annotations

import logging

import pytest
from django.db import OperationalError

from tests.conftest import Team
from tests.factories import make_token
from tests.gateway.helpers import McpTestClient

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
def test_a_database_failure_answers_503_with_a_json_rpc_error_and_one_log_line(
    team: Team, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    client = McpTestClient(make_token(team.bob).raw)

    def unavailable(**kwargs: object) -> None:
        raise OperationalError("couldn't get a connection after 10.00 sec")

    monkeypatch.setattr("gateway.views.token_authenticate", unavailable)
    with caplog.at_level(logging.WARNING, logger="gateway.views"):
        if method == "POST":
            response = client.request("ping")
        else:  # every method authenticates first, so each meets the database
            response = client.client.generic(method, "/ws/acme-tools", **client.headers())
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.json()["error"] == {
        "code": -32000,
        "message": "Gateway database unavailable; retry shortly",
    }
    records = [record for record in caplog.records if record.name == "gateway.views"]
    assert len(records) == 1 and records[0].exc_info is None  # one line, no traceback
    assert "OperationalError" in records[0].getMessage()
