"""Sign-up is throttled per client IP (``SIGNUP_RATE``, default 10 an hour): beyond it the form says so and
no account is made; other addresses are not affected."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db
URL = "/accounts/signup/"
User = get_user_model()


def _sign_up(n: int, **extra: str) -> Any:
    data = {
        "email": f"user{n}@example.com",
        "password1": "a-long-unusual-pass",
        "password2": "a-long-unusual-pass",
    }
    return Client().post(URL, data, **extra)


def test_the_default_is_ten_an_hour(settings: Any) -> None:
    assert settings.SIGNUP_RATE == "10/h"


def test_it_refuses_sign_ups_beyond_the_rate_with_a_clear_error(settings: Any) -> None:
    settings.SIGNUP_RATE = "3/h"
    for n in range(3):
        assert _sign_up(n).status_code == 302
    refused = _sign_up(99)
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    body = refused.content.decode()
    assert "Too many sign-ups from your network. Try again in" in body and 'role="alert"' in body
    assert 'value="user99@example.com"' in body  # what was typed stays
    assert not User.objects.filter(username="user99@example.com").exists()
    assert _sign_up(100, REMOTE_ADDR="10.3.3.3").status_code == 302  # another address


def test_failed_attempts_count_too(settings: Any) -> None:
    settings.SIGNUP_RATE = "2/h"
    client = Client()
    for _ in range(2):
        assert client.post(URL, {"email": "bad", "password1": "x", "password2": "y"}).status_code == 400
    assert _sign_up(1).status_code == 429


def test_it_logs_one_line(settings: Any, caplog: Any) -> None:
    settings.SIGNUP_RATE = "1/h"
    _sign_up(1)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert _sign_up(2).status_code == 429
    lines = [r for r in caplog.records if r.name == "django.request"]
    assert [r.getMessage() for r in lines] == ["Too Many Requests: /accounts/signup/"]
    assert lines[0].exc_info is None and "a-long-unusual-pass" not in caplog.text


def test_a_malformed_rate_stops_the_server(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update({"AEROSTACK_DATA_DIR": str(tmp_path), "SIGNUP_RATE": "ten"})
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**env, "DJANGO_SETTINGS_MODULE": "aerostack.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "SIGNUP_RATE" in result.stderr
