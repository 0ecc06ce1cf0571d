"""Logging helpers: expected refusals are one line, unexpected errors keep their traceback."""

from __future__ import annotations

import logging

# Django's SuspiciousOperation subclasses log to ``django.security.<ClassName>``; a logger's filters apply
# only to records created on that very logger, so each one gets the filter by name.
SECURITY_LOGGERS = (
    "django.security.SuspiciousOperation",
    "django.security.DisallowedHost",
    "django.security.DisallowedRedirect",
    "django.security.SuspiciousFileOperation",
    "django.security.SuspiciousMultipartForm",
    "django.security.SuspiciousSession",
    "django.security.RequestDataTooBig",
    "django.security.TooManyFieldsSent",
    "django.security.TooManyFilesSent",
    "django.security.csrf",
)


class ExpectedRefusalsWithoutTraceback(logging.Filter):
    """Drop the traceback of a record about a 4xx answer (a member's 403, a 404, a CSRF failure, a 429, a
    disallowed host): the refusal is expected and its line says everything, while a traceback per refused
    request buries real errors and grows the log at an attacker's will. 5xx records keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            record.exc_info = None
            record.exc_text = None
        return True
