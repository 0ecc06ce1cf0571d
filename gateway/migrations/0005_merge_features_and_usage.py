"""Two branches of the same day: the servers' feature columns (issue 12) and the usage log's columns (issue 10)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0002_server_features_and_expose_names"),
        ("gateway", "0004_usage_keyset_indexes"),
    ]

    operations: list[migrations.operations.base.Operation] = []
