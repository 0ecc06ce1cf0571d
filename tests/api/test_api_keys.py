"""Personal API keys: format, hashing, authentication, revocation, expiry, the per-IP failure throttle,
CSRF, and the dashboard's API keys page."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from api import keyformat
from api.models import ApiKey
from api.services import LIVE_KEYS_MAX, ApiKeyError, api_key_create, api_key_revoke
from tests.api.conftest import KeyClient, assert_error, bearer, key_for
from tests.conftest import Team, login
from tests.test_no_secret_leaks import dump_database

pytestmark = pytest.mark.django_db


def test_it_makes_keys_like_tokens() -> None:
    raw = keyformat.generate()
    assert re.fullmatch(r"ak_[0-9A-Za-z]{36}", raw)
    assert keyformat.is_well_formed(raw)
    mistyped = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    assert not keyformat.is_well_formed(mistyped)  # the checksum catches it offline
    assert not keyformat.is_well_formed("mwt_" + raw[3:])
    assert keyformat.hint_for(raw) == f"ak_…{raw[-4:]}"
    assert len({keyformat.generate() for _ in range(200)}) == 200


def test_it_stores_only_the_hash_and_logs_no_key(team: Team, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    created = api_key_create(user=team.alice.user, name="Laptop", expires_in=None)
    KeyClient(created.raw).get("/api/v1/me")
    api_key_revoke(key=created.key, actor=team.alice.user)
    dump = dump_database()
    assert created.key.key_hash in dump  # the dump is real
    assert created.raw not in dump and created.raw[3:-6] not in dump
    assert created.raw not in caplog.text
    assert f"key={created.key.pk} hint={created.key.hint}" in caplog.text  # the account-level audit line


def test_it_authenticates_as_the_keys_user(team: Team) -> None:
    response = KeyClient(key_for(team.bob)).get("/api/v1/me")
    assert response.status_code == 200
    assert response.json()["user"]["username"] == "bob@example.com"
    assert response.json()["key"]["name"] == "Laptop CLI"
    assert ApiKey.objects.get(user=team.bob.user).last_used_at is not None


@pytest.mark.parametrize(
    "header",
    ["Bearer ak_nope", "Bearer " + keyformat.generate(), "Bearer mwt_" + "a" * 36, "Bearer "],
    ids=["malformed", "unknown", "workspace-token", "empty"],
)
def test_it_refuses_bad_keys_with_401(team: Team, header: str) -> None:
    response = Client().get("/api/v1/me", HTTP_AUTHORIZATION=header)
    error = assert_error(response, 401, "authentication_failed")
    assert "ak_" in error["message"] or "Unknown" in error["message"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_refuses_anonymous_requests_with_401(db: None) -> None:
    assert_error(Client().get("/api/v1/workspaces"), 401, "not_authenticated")


def test_a_revoked_key_is_refused_at_once(team: Team) -> None:
    created = api_key_create(user=team.alice.user, name="Laptop", expires_in=None)
    client = KeyClient(created.raw)
    assert client.get("/api/v1/me").status_code == 200
    api_key_revoke(key=created.key, actor=team.alice.user)
    assert "revoked" in assert_error(client.get("/api/v1/me"), 401)["message"]


def test_an_expired_key_is_refused(team: Team) -> None:
    created = api_key_create(user=team.alice.user, name="Short", expires_in=60)
    ApiKey.objects.filter(pk=created.key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert "expired" in assert_error(KeyClient(created.raw).get("/api/v1/me"), 401)["message"]


def test_a_disabled_accounts_key_is_refused(team: Team) -> None:
    raw = key_for(team.alice)
    team.alice.user.is_active = False
    team.alice.user.save()
    assert_error(KeyClient(raw).get("/api/v1/me"), 401)


def test_it_checks_name_expiry_and_the_cap(team: Team) -> None:
    with pytest.raises(ApiKeyError, match="name"):
        api_key_create(user=team.alice.user, name="  ", expires_in=None)
    with pytest.raises(ApiKeyError) as refused:
        api_key_create(user=team.alice.user, name="x", expires_in=0)
    assert refused.value.field == "expires_in"
    for index in range(LIVE_KEYS_MAX):
        api_key_create(user=team.bob.user, name=f"k{index}", expires_in=None)
    with pytest.raises(ApiKeyError, match="revoke one"):
        api_key_create(user=team.bob.user, name="one too many", expires_in=None)


def test_only_its_user_may_revoke_a_key(team: Team) -> None:
    created = api_key_create(user=team.alice.user, name="Laptop", expires_in=None)
    with pytest.raises(ApiKey.DoesNotExist):
        api_key_revoke(key=created.key, actor=team.bob.user)
    assert KeyClient(created.raw).get("/api/v1/me").status_code == 200


def test_failures_are_throttled_per_ip_but_a_valid_key_still_passes(team: Team, settings) -> None:  # type: ignore[no-untyped-def]
    settings.GATEWAY_AUTH_FAILURE_LIMIT = (3, 180)
    bad = Client()
    for _ in range(3):
        assert_error(bad.get("/api/v1/me", **bearer(keyformat.generate())), 401)
    blocked = bad.get("/api/v1/me", **bearer(keyformat.generate()))
    assert_error(blocked, 429, "throttled")
    assert int(blocked["Retry-After"]) >= 1
    # The same address with a valid key: let in (a misconfigured bot must not lock out its team).
    assert KeyClient(key_for(team.alice)).get("/api/v1/me").status_code == 200
    # Another address is not affected.
    other = Client(REMOTE_ADDR="10.0.0.9")
    assert_error(other.get("/api/v1/me", **bearer(keyformat.generate())), 401)


def test_requests_are_rate_limited_per_key(team: Team, settings) -> None:  # type: ignore[no-untyped-def]
    settings.API_RATE_LIMIT = 3
    client = KeyClient(key_for(team.alice))
    assert [client.get("/api/v1/me").status_code for _ in range(2)] == [200, 200]
    assert client.get("/api/v1/me")["RateLimit"].startswith('"per-key";r=0;')
    limited = client.get("/api/v1/me")
    assert_error(limited, 429, "throttled")
    assert "Retry-After" in limited
    assert limited["RateLimit-Policy"] == '"per-key";q=3;w=60'
    assert limited["RateLimit"].startswith('"per-key";r=0;t=')
    assert KeyClient(key_for(team.bob)).get("/api/v1/me").status_code == 200  # another key: its own budget


def test_key_requests_need_no_csrf_but_session_requests_do(team: Team, csrf_client: Client) -> None:
    assert KeyClient(key_for(team.alice)).post("/api/v1/workspaces", {"name": "By key"}).status_code == 201
    login(csrf_client, team.alice)
    refused = csrf_client.post("/api/v1/workspaces", {"name": "By session"}, content_type="application/json")
    assert "CSRF" in assert_error(refused, 403, "permission_denied")["message"]
    assert csrf_client.get("/api/v1/workspaces").status_code == 200  # safe methods need no token
    csrf_client.get("/account/api-keys/")
    token = csrf_client.cookies["csrftoken"].value
    accepted = csrf_client.post(
        "/api/v1/workspaces", {"name": "By session"}, content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert accepted.status_code == 201


# -- the dashboard's API keys page ---------------------------------------------------------------------------
def test_the_page_needs_a_login(client: Client) -> None:
    assert client.get("/account/api-keys/")["Location"].startswith("/accounts/login/")


def test_it_creates_a_key_shown_once_and_lists_it(client: Client, team: Team) -> None:
    login(client, team.alice)
    page = client.post("/account/api-keys/", {"name": "Laptop CLI", "expires": "2592000"})
    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"] or "no-cache" in page["Cache-Control"]
    raw = re.search(r"ak_[0-9A-Za-z]{36}", page.content.decode())
    assert raw and KeyClient(raw.group(0)).get("/api/v1/me").status_code == 200
    listing = client.get("/account/api-keys/").content.decode()
    assert "Laptop CLI" in listing and raw.group(0) not in listing
    key = ApiKey.objects.get(user=team.alice.user)
    assert key.hint in listing
    assert key.expires_at is not None
    assert "API keys" in client.get("/workspaces/").content.decode()  # in the account menu


def test_it_shows_form_errors_beside_the_field(client: Client, team: Team) -> None:
    login(client, team.alice)
    page = client.post("/account/api-keys/", {"name": "", "expires": "never"})
    assert page.status_code == 400
    assert "Give the key a name" in page.content.decode()
    assert not ApiKey.objects.exists()


def test_it_revokes_only_ones_own_keys(client: Client, team: Team) -> None:
    mine = api_key_create(user=team.alice.user, name="Mine", expires_in=None)
    theirs = api_key_create(user=team.bob.user, name="Theirs", expires_in=None)
    login(client, team.alice)
    assert client.get(f"/account/api-keys/{mine.key.pk}/revoke/").status_code == 405
    assert client.post(f"/account/api-keys/{theirs.key.pk}/revoke/").status_code == 404
    assert client.post(f"/account/api-keys/{mine.key.pk}/revoke/").status_code == 302
    assert_error(KeyClient(mine.raw).get("/api/v1/me"), 401)
    assert KeyClient(theirs.raw).get("/api/v1/me").status_code == 200


def test_the_page_needs_csrf(csrf_client: Client, team: Team) -> None:
    login(csrf_client, team.alice)
    assert csrf_client.post("/account/api-keys/", {"name": "x", "expires": "never"}).status_code == 403
