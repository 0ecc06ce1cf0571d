"""Helpers for the member and invite tests: read the invite link out of Django's test outbox."""

from __future__ import annotations

import re

from django.core import mail

LINK = re.compile(r"https?://[^\s\"<>]+/invites/([A-Za-z0-9_-]+)/")


def last_invite_link() -> str:
    """The accept link of the last email sent, as the invitee would click it."""
    assert mail.outbox, "no email was sent"
    match = LINK.search(str(mail.outbox[-1].body))
    assert match, mail.outbox[-1].body
    return match.group(0)


def last_invite_secret() -> str:
    match = LINK.search(last_invite_link())
    assert match
    return match.group(1)
