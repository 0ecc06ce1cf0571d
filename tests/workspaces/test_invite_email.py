"""The invite email: plain text and HTML from templates, the same working link in both, and the secret in
no log line and no table."""

from __future__ import annotations

import logging
import re

import pytest
from django.core import mail
from django.test import Client

from tests.conftest import Team
from tests.factories import PASSWORD, UserFactory
from tests.test_no_secret_leaks import dump_database
from workspaces.models import Invite
from workspaces.services import invite_secret_hash, member_invite

pytestmark = pytest.mark.django_db
LINK = re.compile(r"https://mcp\.example\.com/invites/([A-Za-z0-9_-]{43})/")


def test_it_sends_plain_text_and_html_with_the_same_link(team: Team, settings, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    settings.DEFAULT_FROM_EMAIL = "Aerostack <noreply@example.com>"
    member_invite(actor=team.amy, email="dora@example.com", role="admin", base_url="https://mcp.example.com/")
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["dora@example.com"] and message.from_email == "Aerostack <noreply@example.com>"
    assert message.subject == "amy@example.com invited you to Acme Tools on Aerostack"
    text = str(message.body)
    html, mimetype = message.alternatives[0]  # type: ignore[attr-defined]
    assert mimetype == "text/html" and "<html" in str(html) and "<a " not in text and "<p>" not in text
    text_link, html_link = LINK.search(text), LINK.search(str(html))
    assert text_link and html_link and text_link.group(0) == html_link.group(0)
    assert f'<a href="{text_link.group(0)}"' in str(html)
    for body in (text, str(html)):
        assert "Acme Tools" in body and "as admin" in body and "expires in 7 days" in body
        assert "dora@example.com" in body
    secret = text_link.group(1)
    assert Invite.objects.get().secret_hash == invite_secret_hash(secret)
    assert secret not in dump_database() and secret not in caplog.text


def test_the_emailed_link_works(client: Client, team: Team) -> None:
    UserFactory(username="dora@example.com")
    member_invite(
        actor=team.alice, email="dora@example.com", role="member", base_url="https://mcp.example.com"
    )
    match = LINK.search(str(mail.outbox[0].body))
    assert match
    assert client.login(username="dora@example.com", password=PASSWORD)
    path = match.group(0).removeprefix("https://mcp.example.com")
    assert client.get(path)["Location"] == "/invites/accept/"
    assert re.search(r"mwt_[0-9A-Za-z]{36}", client.post("/invites/accept/").content.decode())


def test_the_console_backend_is_the_default(team: Team, capsys, settings) -> None:  # type: ignore[no-untyped-def]
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    member_invite(actor=team.alice, email="dora@example.com", role="member", base_url="http://127.0.0.1:8000")
    printed = capsys.readouterr().out
    secret = Invite.objects.get().secret_hash  # only the hash is stored: find the link by its shape
    link = re.search(r"http://127\.0\.0\.1:8000/invites/([A-Za-z0-9_-]{43})/\n", printed)
    assert "To: dora@example.com" in printed and link, printed  # on one line: copyable from `make run`
    assert invite_secret_hash(link.group(1)) == secret
