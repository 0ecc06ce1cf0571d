"""API test helpers: a personal API key per persona and a client that sends it."""

from __future__ import annotations

from typing import Any

from django.test import Client

from api.services import api_key_create
from workspaces.models import Member


def key_for(member: Member, name: str = "Laptop CLI", expires_in: int | None = None) -> str:
    return api_key_create(user=member.user, name=name, expires_in=expires_in).raw


def bearer(raw: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


class KeyClient:
    """Django's test client with ``Authorization: Bearer ak_...`` and JSON bodies."""

    def __init__(self, raw: str, client: Client | None = None) -> None:
        self.raw = raw
        self.client = client or Client(enforce_csrf_checks=True)

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        import json

        kwargs: dict[str, Any] = {**bearer(self.raw)}
        if body is not None:
            kwargs["data"] = json.dumps(body)
            kwargs["content_type"] = "application/json"
        elif params:
            kwargs["data"] = params
        return getattr(self.client, method.lower())(path, **kwargs)

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, **params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body if body is not None else {})

    def patch(self, path: str, body: Any) -> Any:
        return self.call("PATCH", path, body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)


def as_key(member: Member) -> KeyClient:
    return KeyClient(key_for(member))


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The one error body shape: ``{"error": {"code", "message", "fields"}}``."""
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "fields"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return dict(body["error"])
