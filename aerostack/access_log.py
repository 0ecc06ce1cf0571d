"""gunicorn's access log without the secrets some URLs carry: ``logger_class`` in gunicorn.conf.py.

An invite link (``/invites/<secret>/``) and a password-reset link
(``/accounts/password/reset/<uid>/<token>/``) hold a secret in their path, and gunicorn logs the request
line. Django's views move the secret out of the URL at once (into the session), but the first request would
still be written to the access log in full.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from gunicorn import glogging

SECRET_IN_PATH = re.compile(
    r"(?P<prefix>/invites/)(?!accept/|switch-account/)[^/?#\s]+"
    r"|(?P<reset>/accounts/password/reset/[^/?#\s]+/)(?!set-password/)[^/?#\s]+"
)
# The atoms that can hold a path: the request line, the path, the Referer, and their raw forms.
PATH_ATOMS = ("r", "U", "f", "{referer}i", "{raw_uri}e", "{path_info}e", "{http_referer}e")


def redact(text: str) -> str:
    if "/invites/" not in text and "/reset/" not in text:  # the common case costs two substring tests
        return text
    return SECRET_IN_PATH.sub(lambda m: (m.group("prefix") or m.group("reset")) + "[redacted]", text)


class RedactingLogger(glogging.Logger):  # type: ignore[misc]
    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        for key in PATH_ATOMS:
            value = atoms.get(key)
            if isinstance(value, str):
                atoms[key] = redact(value)
        return atoms


class RedactingFilter(logging.Filter):
    """The same redaction for uvicorn's access log (``uvicorn.access``), which aerostack.worker.Worker uses:
    its records carry the path as a ``%s`` argument, not in gunicorn's atoms."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True
