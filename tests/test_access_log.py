"""The access log never holds the secret of an invite or password-reset link."""

from __future__ import annotations

import pytest

from aerostack.access_log import redact


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("GET /invites/Abc-_123xyz/ HTTP/1.1", "GET /invites/[redacted]/ HTTP/1.1"),
        ("GET /invites/Abc?x=1 HTTP/1.1", "GET /invites/[redacted]?x=1 HTTP/1.1"),
        ("GET /invites/accept/ HTTP/1.1", "GET /invites/accept/ HTTP/1.1"),
        ("POST /invites/switch-account/ HTTP/1.1", "POST /invites/switch-account/ HTTP/1.1"),
        (
            "GET /accounts/password/reset/MQ/cz1k2-abcdef0123456789/ HTTP/1.1",
            "GET /accounts/password/reset/MQ/[redacted]/ HTTP/1.1",
        ),
        (
            "GET /accounts/password/reset/MQ/set-password/ HTTP/1.1",
            "GET /accounts/password/reset/MQ/set-password/ HTTP/1.1",
        ),
        ("GET /accounts/password/reset/sent/ HTTP/1.1", "GET /accounts/password/reset/sent/ HTTP/1.1"),
        ("POST /ws/acme HTTP/1.1", "POST /ws/acme HTTP/1.1"),
    ],
)
def test_it_redacts_secrets_in_paths(line: str, expected: str) -> None:
    assert redact(line) == expected


def test_uvicorns_access_log_is_redacted_too() -> None:
    """The serving worker logs requests through uvicorn.access: its path argument loses the secret."""
    import logging

    from aerostack.access_log import RedactingFilter

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/invites/Abc-_123xyz/", "1.1", 302),
        None,
    )
    assert RedactingFilter().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /invites/[redacted]/ HTTP/1.1" 302'
