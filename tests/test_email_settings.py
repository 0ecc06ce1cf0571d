"""EMAIL_URL / EMAIL_HOST & co.: parsed strictly, console backend when unset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from aerostack.environ import email_from_url

ROOT = Path(__file__).resolve().parent.parent
SMTP = "django.core.mail.backends.smtp.EmailBackend"
PRINT = (
    "from django.conf import settings as s; import django; django.setup(); "
    "print(s.EMAIL_BACKEND, getattr(s, 'EMAIL_HOST', '-'), getattr(s, 'EMAIL_PORT', '-'), "
    "repr(getattr(s, 'EMAIL_HOST_PASSWORD', '-')), getattr(s, 'EMAIL_USE_TLS', '-'), repr(s.DEFAULT_FROM_EMAIL))"
)


def test_it_reads_an_smtp_url_with_starttls() -> None:
    config = email_from_url("smtp://mailer%40example.com:p%3Ass@mail.example.com:2525?tls=1&timeout=5")
    assert config == {
        "EMAIL_BACKEND": SMTP,
        "EMAIL_HOST": "mail.example.com",
        "EMAIL_PORT": 2525,
        "EMAIL_HOST_USER": "mailer@example.com",
        "EMAIL_HOST_PASSWORD": "p:ss",
        "EMAIL_USE_TLS": True,
        "EMAIL_USE_SSL": False,
        "EMAIL_TIMEOUT": 5,
    }


@pytest.mark.parametrize(
    ("url", "port", "tls", "ssl"),
    [
        ("smtp://mail.example.com", 25, False, False),
        ("smtp://mail.example.com?tls=yes", 587, True, False),
        ("smtps://mail.example.com", 465, False, True),
        ("smtp://mail.example.com?ssl=1", 465, False, True),
    ],
)
def test_it_picks_the_usual_port(url: str, port: int, tls: bool, ssl: bool) -> None:
    config = email_from_url(url)
    assert (config["EMAIL_PORT"], config["EMAIL_USE_TLS"], config["EMAIL_USE_SSL"]) == (port, tls, ssl)
    assert config["EMAIL_HOST_USER"] == "" and config["EMAIL_TIMEOUT"] == 10


def test_it_reads_console_and_file_urls() -> None:
    assert email_from_url("console://") == {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}
    assert email_from_url("file:///var/mail/aerostack") == {
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": "/var/mail/aerostack",
    }


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://mail.example.com", "must start with one of"),
        ("mail.example.com:25", "must start with one of"),
        ("smtp://", "must name the SMTP host"),
        ("smtp://mail.example.com:99999", "invalid port"),
        ("smtp://mail.example.com?tsl=1", "unknown options: tsl"),
        ("smtp://mail.example.com?tls=maybe", "not a boolean"),
        ("smtp://mail.example.com?tls=1&ssl=1", "exclude each other"),
        ("smtp://mail.example.com?timeout=soon", "whole number of seconds"),
        ("file://", "needs a folder"),
    ],
)
def test_it_refuses_malformed_urls(url: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        email_from_url(url)


def _boot(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("EMAIL_", "DEFAULT_FROM"))}
    base.update({"DJANGO_SETTINGS_MODULE": "aerostack.settings", "AEROSTACK_DATA_DIR": str(tmp_path)}, **env)
    return subprocess.run(
        [sys.executable, "-c", PRINT], cwd=ROOT, env=base, capture_output=True, text=True, timeout=60
    )


def test_settings_use_the_console_when_nothing_is_set(tmp_path: Path) -> None:
    result = _boot(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "django.core.mail.backends.console.EmailBackend"
    assert "'Aerostack <aerostack@localhost>'" in result.stdout


def test_settings_read_email_host_and_a_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cret\n")
    result = _boot(
        tmp_path,
        EMAIL_HOST="mail.example.com",
        EMAIL_USE_TLS="true",
        EMAIL_HOST_USER="mailer",
        EMAIL_HOST_PASSWORD_FILE=str(secret),
        DEFAULT_FROM_EMAIL="Ops <ops@example.com>",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        SMTP,
        "mail.example.com",
        "587",
        "'s3cret'",
        "True",
        "'Ops",
        "<ops@example.com>'",
    ]


def test_settings_read_email_url(tmp_path: Path) -> None:
    result = _boot(tmp_path, EMAIL_URL="smtps://u:p@mail.example.com")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:4] == [SMTP, "mail.example.com", "465", "'p'"]


def test_settings_fail_loudly_on_bad_email_settings(tmp_path: Path) -> None:
    for env in (
        {"EMAIL_URL": "smtp://mail.example.com?tls=1&ssl=1"},
        {"EMAIL_URL": "smtp://a.example.com", "EMAIL_HOST": "b.example.com"},
        {"EMAIL_HOST": "mail.example.com", "EMAIL_PORT": "twenty-five"},
        {"EMAIL_HOST": "mail.example.com", "EMAIL_USE_TLS": "sure"},
    ):
        result = _boot(tmp_path, **env)
        assert result.returncode != 0 and "ImproperlyConfigured" in result.stderr, env
