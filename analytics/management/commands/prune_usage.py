"""``manage.py prune_usage``: delete usage rows and rollups past retention (see analytics.retention).

Safe from cron (README shows the line): idempotent, batched, short transactions.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from analytics.retention import BATCH_SIZE, prune


class Command(BaseCommand):
    help = (
        "Delete raw usage rows older than USAGE_RETENTION_DAYS (default 90), minute rollups older than "
        "48 hours and hour rollups older than 400 days, in batches (idempotent; run from cron)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch-size", type=int, default=BATCH_SIZE, help="Rows per DELETE (default 5000)."
        )
        parser.add_argument(
            "--pause", type=float, default=0.0, help="Seconds to wait between batches (default 0)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        if options["pause"] < 0:
            raise CommandError("--pause cannot be negative.")
        try:
            result = prune(batch_size=options["batch_size"], pause=options["pause"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if options["verbosity"] >= 1:
            self.stdout.write(
                f"Deleted {result.raw_rows} usage rows older than {result.raw_cutoff:%Y-%m-%d %H:%M} UTC, "
                f"{result.minute_rollups} minute rollups, {result.hour_rollups} hour rollups, "
                f"{result.day_rollups} day rollups, "
                f"{result.dropped_counts} dropped-row counts."
            )
