from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from aerostack.environ import database_from_url, env_bool, env_int, env_list, env_str, env_url


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        ("on", True),
        ("0", False),
        ("False", False),
        ("no", False),
        ("off", False),
    ],
)
def test_it_reads_booleans(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("X_FLAG", value)
    assert env_bool("X_FLAG", not expected) is expected


def test_it_refuses_malformed_booleans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_FLAG", "ture")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG='ture' is not a boolean"):
        env_bool("X_FLAG", False)


def test_it_uses_defaults_for_unset_and_blank(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X_NUM", raising=False)
    assert env_int("X_NUM", 7) == 7
    monkeypatch.setenv("X_NUM", "  ")
    assert env_int("X_NUM", 7) == 7


def test_it_refuses_malformed_and_out_of_range_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_NUM", "12x")
    with pytest.raises(ImproperlyConfigured, match="not a whole number"):
        env_int("X_NUM", 1)
    monkeypatch.setenv("X_NUM", "-1")
    with pytest.raises(ImproperlyConfigured, match="below the minimum"):
        env_int("X_NUM", 1, minimum=0)
    monkeypatch.setenv("X_NUM", "99")
    with pytest.raises(ImproperlyConfigured, match="above the maximum"):
        env_int("X_NUM", 1, maximum=10)


def test_it_reads_values_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert env_str("X_SECRET") == "from-a-file"
    monkeypatch.setenv("X_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="cannot be read"):
        env_str("X_SECRET")


def test_it_reads_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_LIST", "a, b,,c ")
    assert env_list("X_LIST", []) == ["a", "b", "c"]


def test_it_checks_url_schemes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_URL", "ftp://example.com")
    with pytest.raises(ImproperlyConfigured, match="must be an absolute URL"):
        env_url("X_URL", schemes=("http", "https"))
    monkeypatch.setenv("X_URL", "https://example.com/")
    assert env_url("X_URL", schemes=("http", "https")) == "https://example.com/"


def test_it_parses_database_urls() -> None:
    config = database_from_url("postgres://us%40er:p%3Ass@db.internal:5433/aero?sslmode=require")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["USER"], config["PASSWORD"], config["HOST"], config["PORT"], config["NAME"]) == (
        "us@er",
        "p:ss",
        "db.internal",
        "5433",
        "aero",
    )
    assert config["OPTIONS"] == {
        "sslmode": "require",
        "pool": {"min_size": 1, "max_size": 16, "timeout": 10.0},
    }
    assert config["CONN_MAX_AGE"] == 0  # the pool keeps the connections


def test_the_pool_bounds_come_from_the_caller() -> None:
    config = database_from_url("postgres://h/db", pool_max=3, pool_timeout=2)
    assert config["OPTIONS"]["pool"] == {"min_size": 1, "max_size": 3, "timeout": 2}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://h/db", "must start with postgres"),
        ("postgres://h/", "must name a database"),
        ("postgres://h:notaport/db", "invalid port"),
    ],
)
def test_it_refuses_bad_database_urls(url: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        database_from_url(url)
