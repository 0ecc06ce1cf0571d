"""Keyset indexes of the Analytics tab, built after 0003 has filled exposed_name."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0003_usage_one_meaning"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="usageevent",
            index=models.Index(fields=["workspace", "-created_at", "-id"], name="usage_ws_created_id"),
        ),
        migrations.AddIndex(
            model_name="usageevent",
            index=models.Index(
                fields=["workspace", "member", "-created_at", "-id"], name="usage_ws_member_created_id"
            ),
        ),
        migrations.AddIndex(
            model_name="usageevent",
            index=models.Index(fields=["token", "-created_at", "-id"], name="usage_token_created_id"),
        ),
        migrations.AddIndex(
            model_name="usageevent",
            index=models.Index(
                fields=["workspace", "exposed_name", "-created_at", "-id"], name="usage_ws_tool_created_id"
            ),
        ),
    ]
