"""Day rollups (``day`` and the ``d_*`` projections): the hour rollup and each hour projection per UTC day.

The backfill builds them from the hour rollups already stored (a day is the sum of its hours: counts and
sums added, histograms added bucket by bucket, the newest times and error kept), reading one hour
granularity at a time in time order and writing each finished day with the writer's own additive upsert.
Day rows already present are deleted first: the rollup backfill (0003) runs the writer's current
aggregation and so may have written day rows too; rebuilt from the hours they are never counted twice.
From here on the usage writer keeps the day rollups up to date with the hour ones.
"""

from datetime import UTC

from django.db import migrations, models

CHUNK = 5_000
HOUR_TO_DAY = {
    "hour": "day",
    "h_tot": "d_tot",
    "h_tool": "d_tool",
    "h_srv": "d_srv",
    "h_cli": "d_cli",
    "h_tok": "d_tok",
}
KEY = (
    "workspace_id",
    "member_id",
    "token_id",
    "server_id",
    "server_slug",
    "tool",
    "exposed_name",
    "method",
    "client_name",
    "client_version",
    "outcome",
)


def _merge(agg, row):
    from analytics import histogram

    agg.calls += row.calls
    agg.duration_sum += row.duration_sum
    agg.upstream_calls += row.upstream_calls
    agg.upstream_sum += row.upstream_sum
    agg.duration_hist = histogram.add(agg.duration_hist, row.duration_hist)
    agg.upstream_hist = histogram.add(agg.upstream_hist, row.upstream_hist)
    agg.gateway_hist = histogram.add(agg.gateway_hist, row.gateway_hist)
    if agg.last_at is None or row.last_at > agg.last_at:
        agg.last_at = row.last_at
    if row.last_error_at is not None and (agg.last_error_at is None or row.last_error_at > agg.last_error_at):
        agg.last_error_at = row.last_error_at
        agg.last_error = row.last_error


def _chunks(rows):
    """The rows in (bucket_start, pk) order, read by keyset in lists of CHUNK (no cursor stays open while
    the day rows are written to the same table)."""
    chunk = list(rows[:CHUNK])
    while chunk:
        yield from chunk
        last = chunk[-1]
        after = models.Q(bucket_start__gt=last.bucket_start) | models.Q(
            bucket_start=last.bucket_start, pk__gt=last.pk
        )
        chunk = list(rows.filter(after)[:CHUNK]) if len(chunk) == CHUNK else []


def forward(apps, schema_editor):
    from analytics import rollups

    alias = schema_editor.connection.alias
    rollup = apps.get_model("analytics", "UsageRollup")
    rollup.objects.using(alias).filter(granularity__in=list(HOUR_TO_DAY.values())).delete()
    for hour_granularity, day_granularity in HOUR_TO_DAY.items():
        rows = rollup.objects.using(alias).filter(granularity=hour_granularity).order_by("bucket_start", "pk")
        increments: dict = {}
        current = None
        for row in _chunks(rows):
            day = row.bucket_start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            if day != current:
                rollups.add(increments, using=alias)
                increments, current = {}, day
            values = [getattr(row, name) for name in KEY]
            key = (values[0], day_granularity, day, *values[1:])
            agg = increments.get(key)
            if agg is None:
                agg = increments[key] = rollups.Aggregate()
            _merge(agg, row)
        rollups.add(increments, using=alias)


def backward(apps, schema_editor):
    rollup = apps.get_model("analytics", "UsageRollup")
    rollup.objects.using(schema_editor.connection.alias).filter(
        granularity__in=list(HOUR_TO_DAY.values())
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0003_backfill_rollups"),
    ]

    operations = [
        migrations.AlterField(
            model_name="usagerollup",
            name="granularity",
            field=models.CharField(
                choices=[
                    ("minute", "Minute"),
                    ("hour", "Hour"),
                    ("h_tot", "Hour, totals"),
                    ("h_tool", "Hour, per tool"),
                    ("h_srv", "Hour, per server"),
                    ("h_cli", "Hour, per client"),
                    ("h_tok", "Hour, per token"),
                    ("day", "Day"),
                    ("d_tot", "Day, totals"),
                    ("d_tool", "Day, per tool"),
                    ("d_srv", "Day, per server"),
                    ("d_cli", "Day, per client"),
                    ("d_tok", "Day, per token"),
                ],
                max_length=6,
            ),
        ),
        migrations.RunPython(forward, backward, elidable=False),
    ]
