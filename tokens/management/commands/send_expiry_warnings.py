"""``manage.py send_expiry_warnings``: email token holders 7 days and 1 day before their tokens expire.

Safe from cron every few minutes (see README): each warning is sent once, even with two copies running.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tokens.warnings import expiry_warnings_send


class Command(BaseCommand):
    help = "Email token holders 7 days and 1 day before their tokens expire (idempotent; run from cron)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--base-url",
            default=settings.PUBLIC_URL,
            help="The public address the rotate links start with (default: PUBLIC_URL).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        base_url = options["base_url"]
        if not base_url:
            raise CommandError("Set PUBLIC_URL (or pass --base-url): the emails link to the dashboard.")
        sent = expiry_warnings_send(base_url=base_url)
        if options["verbosity"] >= 1:
            self.stdout.write(f"Sent {sent} expiry warning{'s' if sent != 1 else ''}.")
