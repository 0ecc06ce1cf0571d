"""manage.py send_expiry_warnings: one email 7 days and one 1 day before expiry, each exactly once (also
with two copies running at the same moment), nothing for revoked, rotated or ended tokens."""

from __future__ import annotations

import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from tests.conftest import Team
from tests.factories import make_token
from tokens.models import Token
from tokens.services import token_revoke, token_rotate
from tokens.warnings import expiry_warnings_send
from workspaces.services import member_remove

pytestmark = pytest.mark.django_db
BASE = "https://aerostack.example.com"
DAY = 86400


def send(now: object = None) -> int:
    return expiry_warnings_send(base_url=BASE, now=now)  # type: ignore[arg-type]


def test_it_warns_7_days_and_1_day_before_expiry(team: Team) -> None:
    created = make_token(team.bob, name="Bob CI", expires_in=10 * DAY)
    start = created.token.created_at
    assert send(start) == 0 and send(start + timedelta(days=2)) == 0
    assert send(start + timedelta(days=3, minutes=1)) == 1  # 7 days before
    assert send(start + timedelta(days=3, minutes=5)) == 0  # once
    assert send(start + timedelta(days=9, minutes=1)) == 1  # 1 day before
    assert send(start + timedelta(days=9, minutes=5)) == 0
    assert [m.to for m in mail.outbox] == [["bob@example.com"]] * 2
    week, day = mail.outbox
    assert "expires in 7 days" in week.subject and "expires in 1 day" in day.subject
    link = f"{BASE}/workspaces/acme-tools/tokens/{created.token.pk}/rotate/"
    assert link in week.body and link in week.alternatives[0][0]  # type: ignore[index]
    assert created.raw not in week.body and "Bob CI" in week.body


def test_a_token_already_inside_one_day_gets_one_email(team: Team) -> None:
    created = make_token(team.bob, expires_in=12 * 3600)
    assert send() == 1 and send() == 0
    assert len(mail.outbox) == 1 and "1 day" in mail.outbox[0].subject
    token = Token.objects.get(pk=created.token.pk)
    assert token.warned_1d_at is not None and token.warned_7d_at is not None


def test_nothing_for_revoked_expired_rotated_or_ended_tokens(team: Team) -> None:
    token_revoke(token=make_token(team.bob, name="revoked", expires_in=DAY).token, actor=team.bob.user)
    expired = make_token(team.bob, name="expired", expires_in=60)
    rotated = make_token(team.bob, name="rotated", expires_in=30 * DAY)
    token_rotate(token=rotated.token, actor=team.bob.user, grace_seconds=3600)  # the old one is in its grace
    make_token(team.amy, name="leaver", expires_in=DAY)
    member_remove(actor=team.alice, member=team.amy)
    assert send(expired.token.created_at + timedelta(minutes=2)) == 0
    assert mail.outbox == []


def test_the_command_needs_a_public_url(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PUBLIC_URL = ""
    with pytest.raises(CommandError, match="PUBLIC_URL"):
        call_command("send_expiry_warnings", base_url="")


def test_the_command_sends_and_says_how_many(team: Team) -> None:
    make_token(team.bob, expires_in=3 * DAY)
    out = StringIO()
    call_command("send_expiry_warnings", base_url=BASE, stdout=out)
    assert out.getvalue().strip() == "Sent 1 expiry warning."
    assert len(mail.outbox) == 1


@pytest.mark.only_on("postgresql")
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_runs_send_each_warning_once(team: Team) -> None:
    """Two copies at the same moment, each with its own database connection: every email goes out once."""
    for n in range(20):
        make_token(team.bob, name=f"t{n}", expires_in=(2 + n % 3) * DAY)
    make_token(team.bob, name="soon", expires_in=3600)
    now = timezone.now()
    barrier = threading.Barrier(2)
    counts: list[int] = []

    def run() -> None:
        try:
            barrier.wait()
            counts.append(send(now))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(counts) == 21 and len(mail.outbox) == 21
    assert len({m.subject + m.body for m in mail.outbox}) == 21
    assert send(now) == 0
