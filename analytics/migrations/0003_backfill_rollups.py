"""Roll up the usage rows recorded before rollups existed, so an upgraded install's charts show its history.

Hour rollups (and their projections) for the rows of the last 400 days, minute rollups for the last 48 hours
(what retention keeps),
read in primary-key order in chunks of 5,000 and added with the writer's own additive upsert. From here on
the usage writer keeps the rollups up to date.
"""

from datetime import timedelta

from django.db import migrations
from django.utils import timezone

CHUNK = 5_000
FIELDS = (
    "id",
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
    "created_at",
    "duration_ms",
    "upstream_ms",
    "detail",
)


def forward(apps, schema_editor):
    from analytics import rollups

    alias = schema_editor.connection.alias
    now = timezone.now()
    minutes_since = now - timedelta(hours=48)
    rows = (
        apps.get_model("gateway", "UsageEvent")
        .objects.using(alias)
        .filter(workspace_id__isnull=False, created_at__gte=now - timedelta(days=400))
        .only(*FIELDS)
        .order_by("pk")
    )
    last = 0
    while chunk := list(rows.filter(pk__gt=last)[:CHUNK]):
        last = chunk[-1].pk
        increments = rollups.aggregate(chunk, ["hour"])
        recent = [row for row in chunk if row.created_at >= minutes_since]
        rollups.add(rollups.aggregate(recent, ["minute"], into=increments), using=alias)


def backward(apps, schema_editor):
    apps.get_model("analytics", "UsageRollup").objects.using(schema_editor.connection.alias).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0002_rollup_projections"),
        ("gateway", "0004_usage_keyset_indexes"),
    ]

    operations = [migrations.RunPython(forward, backward, elidable=False)]
