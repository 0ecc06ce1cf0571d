"""The settings module boots as a user would run it: in a fresh process, from the environment alone."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRINT = (
    "from django.conf import settings as s; import django; django.setup(); "
    "print(s.DEBUG, s.DATABASES['default']['ENGINE'], s.CACHES['default']['BACKEND'])"
)


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY"}
    }
    base.update({"DJANGO_SETTINGS_MODULE": "aerostack.settings", "AEROSTACK_DATA_DIR": str(tmp_path)}, **env)
    return subprocess.run(
        [sys.executable, "-c", PRINT], cwd=ROOT, env=base, capture_output=True, text=True, timeout=60
    )


def test_it_defaults_to_the_embedded_setup_with_a_private_secret_key(tmp_path: Path) -> None:
    result = _run(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "False",
        "django.db.backends.sqlite3",
        "aerostack.cache.LocalCache",
    ]
    key_file = tmp_path / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    first = key_file.read_text()
    assert _run(tmp_path).returncode == 0 and key_file.read_text() == first  # generated once, then kept


def test_it_switches_to_postgres_and_redis(tmp_path: Path) -> None:
    result = _run(
        tmp_path, DATABASE_URL="postgres://u@127.0.0.1:5432/x", REDIS_URL="redis://127.0.0.1:6379/0"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1:] == [
        "django.db.backends.postgresql",
        "aerostack.cache.RedisCache",
    ]


def test_it_fails_loudly_on_malformed_values(tmp_path: Path) -> None:
    for env in (
        {"DEBUG": "ture"},
        {"REDIS_URL": "localhost:6379"},
        {"SECRET_KEY": "short"},
        {"TRUSTED_PROXIES": "nonsense"},
    ):
        result = _run(tmp_path, **env)
        assert result.returncode != 0 and "ImproperlyConfigured" in result.stderr, env
