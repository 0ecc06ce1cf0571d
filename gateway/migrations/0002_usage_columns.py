"""UsageEvent: one meaning per column (exposed_name beside tool), upstream_ms, the client's clientInfo."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0002_server_features_and_expose_names"),  # main's 0002, merged first
        ("tokens", "0003_rotation_scopes_warnings"),
        ("workspaces", "0006_invite"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="usageevent",
            name="usage_workspace_created",
        ),
        migrations.RemoveIndex(
            model_name="usageevent",
            name="usage_token_created",
        ),
        migrations.AddField(
            model_name="usageevent",
            name="client_name",
            field=models.CharField(blank=True, max_length=100),
        ),
        migrations.AddField(
            model_name="usageevent",
            name="client_version",
            field=models.CharField(blank=True, max_length=50),
        ),
        migrations.AddField(
            model_name="usageevent",
            name="exposed_name",
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AddField(
            model_name="usageevent",
            name="upstream_ms",
            field=models.FloatField(blank=True, null=True),
        ),
    ]
