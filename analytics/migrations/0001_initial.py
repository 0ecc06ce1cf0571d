"""Usage rollups (hour, minute) and the dropped-usage counter."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("workspaces", "0006_invite"),
    ]

    operations = [
        migrations.CreateModel(
            name="DroppedUsage",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                (
                    "reason",
                    models.CharField(
                        choices=[("queue_full", "Queue full"), ("db_error", "Database error")], max_length=20
                    ),
                ),
                ("count", models.BigIntegerField(default=0)),
                ("updated_at", models.DateTimeField()),
                (
                    "workspace",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="dropped_usage",
                        to="workspaces.workspace",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("workspace", "day", "reason"), name="dropped_usage_key")
                ],
            },
        ),
        migrations.CreateModel(
            name="UsageRollup",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "granularity",
                    models.CharField(choices=[("minute", "Minute"), ("hour", "Hour")], max_length=6),
                ),
                ("bucket_start", models.DateTimeField()),
                ("member_id", models.BigIntegerField(default=0)),
                ("token_id", models.BigIntegerField(default=0)),
                ("server_id", models.BigIntegerField(default=0)),
                ("server_slug", models.CharField(blank=True, max_length=32)),
                ("tool", models.CharField(blank=True, max_length=200)),
                ("exposed_name", models.CharField(blank=True, max_length=200)),
                ("method", models.CharField(blank=True, max_length=100)),
                ("client_name", models.CharField(blank=True, max_length=100)),
                ("client_version", models.CharField(blank=True, max_length=50)),
                ("outcome", models.CharField(max_length=20)),
                ("calls", models.BigIntegerField(default=0)),
                ("duration_sum", models.FloatField(default=0)),
                ("upstream_calls", models.BigIntegerField(default=0)),
                ("upstream_sum", models.FloatField(default=0)),
                ("duration_hist", models.JSONField(default=dict)),
                ("upstream_hist", models.JSONField(default=dict)),
                ("gateway_hist", models.JSONField(default=dict)),
                ("last_at", models.DateTimeField()),
                ("last_error_at", models.DateTimeField(blank=True, null=True)),
                ("last_error", models.CharField(blank=True, max_length=300)),
                (
                    "workspace",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="usage_rollups",
                        to="workspaces.workspace",
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(
                        fields=["workspace", "granularity", "member_id", "bucket_start"], name="rollup_member"
                    ),
                    models.Index(
                        fields=["workspace", "granularity", "token_id", "bucket_start"], name="rollup_token"
                    ),
                    models.Index(fields=["granularity", "bucket_start"], name="rollup_prune"),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=(
                            "workspace",
                            "granularity",
                            "bucket_start",
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
                        ),
                        name="usage_rollup_key",
                    )
                ],
            },
        ),
    ]
