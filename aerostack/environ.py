"""Strict readers for settings that come from the environment.

Every reader fails loudly (``ImproperlyConfigured``) on a malformed value instead of guessing: a typo in
``DEBUG=ture`` must stop the server, not silently run it in the wrong mode. Any value may also be given as
``NAME_FILE`` (a path whose content is the value), the usual way to pass secrets to containers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str | None = None) -> str | None:
    """The raw value of ``name`` (or of the file named by ``name_FILE``), stripped; ``default`` if unset."""
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            with open(file_name, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_name!r} cannot be read: {exc.strerror}") from exc
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def env_bool(name: str, default: bool) -> bool:
    value = env_str(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={value!r} is not a boolean: use one of 1/0, true/false, yes/no, on/off"
    )


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = env_str(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below the minimum of {minimum}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number} is above the maximum of {maximum}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated list; empty items are dropped."""
    value = env_str(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"30/3m"`` -> (30, 180): a count per period, in django-ratelimit's notation."""
    match = _RATE.match(rate)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"invalid rate {rate!r}: use e.g. 120/m or 30/3m")
    count, multiplier, unit = match.groups()
    return int(count), int(multiplier or 1) * _UNIT_SECONDS[unit]


def env_rate(name: str, default: str) -> tuple[int, int]:
    value = env_str(name, default) or default
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None


def env_url(name: str, *, schemes: tuple[str, ...]) -> str | None:
    value = env_str(name)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc:
        raise ImproperlyConfigured(f"{name} must be an absolute URL starting with {' or '.join(schemes)}://")
    return value


@dataclass(frozen=True)
class _ParsedDatabaseUrl:
    name: str
    user: str
    password: str
    host: str
    port: str
    options: dict[str, str]


def database_from_url(url: str, *, pool_max: int = 16, pool_timeout: float = 10.0) -> dict[str, Any]:
    """Django ``DATABASES['default']`` for a ``postgres://user:pass@host:port/name?opt=v`` URL.

    Only PostgreSQL is accepted: the embedded SQLite database needs no URL at all. Connections come from
    psycopg's pool, at most ``pool_max`` per process; a request that finds them all busy waits up to
    ``pool_timeout`` seconds for one.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured("DATABASE_URL must start with postgres:// or postgresql://")
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ImproperlyConfigured("DATABASE_URL must name a database, e.g. postgres://host/aerostack")
    try:
        port = str(parts.port or "")
    except ValueError:
        raise ImproperlyConfigured("DATABASE_URL has an invalid port") from None
    parsed = _ParsedDatabaseUrl(
        name=name,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        host=unquote(parts.hostname or ""),
        port=port,
        options=dict(parse_qsl(parts.query)),
    )
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parsed.name,
        "USER": parsed.user,
        "PASSWORD": parsed.password,
        "HOST": parsed.host,
        "PORT": parsed.port,
        # A pool per process instead of Django's persistent connections: with those, every one of a lane's
        # threads (up to 256 in the gateway's) kept a connection of its own for as long as it lived, so one
        # process under 200 slow calls held 200 and a few nodes exhausted PostgreSQL's max_connections (100).
        # Pooled, a request takes a connection when it first queries and gives it back when it ends (or,
        # in the gateway, before it waits on an upstream: aerostack.db.release_connection), and opening
        # one is still paid only once. The pool hands out only healthy connections.
        "OPTIONS": {
            **parsed.options,
            "pool": {"min_size": 1, "max_size": pool_max, "timeout": pool_timeout},
        },
        "CONN_MAX_AGE": 0,  # the pool keeps connections; Django refuses persistent ones beside it
        "CONN_HEALTH_CHECKS": False,
    }


_EMAIL_BACKENDS = {
    "smtp": "django.core.mail.backends.smtp.EmailBackend",
    "smtps": "django.core.mail.backends.smtp.EmailBackend",
    "console": "django.core.mail.backends.console.EmailBackend",
    "file": "django.core.mail.backends.filebased.EmailBackend",
}
_EMAIL_OPTIONS = {"tls", "ssl", "timeout"}


def email_from_url(url: str) -> dict[str, Any]:
    """Django's ``EMAIL_*`` settings for an ``EMAIL_URL``.

    ``smtp://user:pass@host:587?tls=1`` (STARTTLS), ``smtps://user:pass@host:465`` (TLS from the first
    byte), ``console://`` (messages on stderr) or ``file:///path/to/folder`` (one file per message). User and
    password are percent-decoded, so ``@`` and ``:`` in them are written ``%40`` and ``%3A``. Unknown schemes
    and options are refused rather than ignored.
    """
    parts = urlsplit(url)
    if parts.scheme not in _EMAIL_BACKENDS:
        raise ImproperlyConfigured(
            f"EMAIL_URL must start with one of {', '.join(f'{s}://' for s in _EMAIL_BACKENDS)}"
        )
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(options) - _EMAIL_OPTIONS
    if unknown:
        raise ImproperlyConfigured(f"EMAIL_URL has unknown options: {', '.join(sorted(unknown))}")
    config: dict[str, Any] = {"EMAIL_BACKEND": _EMAIL_BACKENDS[parts.scheme]}
    if parts.scheme == "file":
        if not parts.path or parts.path == "/":
            raise ImproperlyConfigured(
                "EMAIL_URL file:// needs a folder, e.g. file:///var/lib/aerostack/mail"
            )
        config["EMAIL_FILE_PATH"] = unquote(parts.path)
        return config
    if parts.scheme == "console":
        return config
    if not parts.hostname:
        raise ImproperlyConfigured(
            "EMAIL_URL must name the SMTP host, e.g. smtp://user:pass@mail.example.com:587"
        )
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured("EMAIL_URL has an invalid port") from None

    def flag(name: str, default: bool) -> bool:
        value = options.get(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ImproperlyConfigured(f"EMAIL_URL option {name}={value!r} is not a boolean: use 1 or 0")

    use_ssl = flag("ssl", parts.scheme == "smtps")
    use_tls = flag("tls", False)
    if use_ssl and use_tls:
        raise ImproperlyConfigured("EMAIL_URL: tls (STARTTLS) and ssl (implicit TLS) exclude each other")
    timeout = options.get("timeout", "10")
    if not timeout.isdigit() or int(timeout) < 1:
        raise ImproperlyConfigured(f"EMAIL_URL option timeout={timeout!r} must be a whole number of seconds")
    config.update(
        EMAIL_HOST=parts.hostname,
        EMAIL_PORT=port or (465 if use_ssl else 587 if use_tls else 25),
        EMAIL_HOST_USER=unquote(parts.username or ""),
        EMAIL_HOST_PASSWORD=unquote(parts.password or ""),
        EMAIL_USE_TLS=use_tls,
        EMAIL_USE_SSL=use_ssl,
        EMAIL_TIMEOUT=int(timeout),
    )
    return config
