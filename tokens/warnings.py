"""Expiry warnings: one email to the holder 7 days and one 1 day before a token expires.

Run from cron every few minutes (``manage.py send_expiry_warnings``). Each warning is claimed with a
conditional UPDATE of the token's stamp (``warned_7d_at`` / ``warned_1d_at``) before the email goes out, so
two copies running at the same moment send it once: exactly one UPDATE changes the row. A failed send gives
the claim back, and the next run tries again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import F
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from aerostack.mail import send_mail
from tokens.models import Token, active_at

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    stamp: str  # the Token field that records the claim
    before: timedelta  # how long before the expiry the warning goes out
    label: str


# Nearest first: a token that is already inside one day gets the 1-day warning only, and that claim also
# settles the 7-day one (one email, not two in a row).
STAGES = (
    Stage("warned_1d_at", timedelta(days=1), "1 day"),
    Stage("warned_7d_at", timedelta(days=7), "7 days"),
)


def expiry_warnings_send(*, base_url: str, now: datetime | None = None) -> int:
    """Send the warnings that are due at ``now``; returns how many were sent.

    Due: a working token (not revoked, not expired) of a current member, expiring within the stage's time,
    not already warned at that stage, and not rotated (a token in its grace period has a successor; its
    holder chose when it stops). ``base_url`` is the public address the rotate link starts with.
    """
    now = now or timezone.now()
    sent = 0
    for stage in STAGES:
        due = (
            Token.objects.filter(
                active_at(now),
                expires_at__lte=now + stage.before,
                member__ended_at__isnull=True,
                successor__isnull=True,
                **{f"{stage.stamp}__isnull": True},
            )
            .select_related("member__user", "workspace")
            .order_by("expires_at", "pk")
        )
        for token in due:
            claim = {stage.stamp: now}
            if stage.stamp == "warned_1d_at":
                claim["warned_7d_at"] = Coalesce(F("warned_7d_at"), now)  # type: ignore[assignment]
            # The claim: of two runs, only the one whose UPDATE changed the row sends.
            if not Token.objects.filter(pk=token.pk, **{f"{stage.stamp}__isnull": True}).update(**claim):
                continue
            if _send(token, stage, base_url):
                sent += 1
            else:
                Token.objects.filter(pk=token.pk, **{stage.stamp: now}).update(**{stage.stamp: None})
    return sent


def _send(token: Token, stage: Stage, base_url: str) -> bool:
    user = token.member.user
    address = user.email or user.username
    link = base_url.rstrip("/") + reverse("token_rotate", args=[token.workspace.slug, token.pk])
    context = {
        "token": token,
        "workspace": token.workspace,
        "user": user,
        "link": link,
        "within": stage.label,
    }
    try:
        send_mail(name="token_expiry", to=address, context=context)
    except Exception:  # one bad address or a mail server hiccup must not stop the other warnings
        logger.exception("could not send the %s expiry warning of token %s", stage.label, token.pk)
        return False
    logger.info("sent the %s expiry warning of token %s (%s)", stage.label, token.pk, token.hint)
    return True
