"""``Workspace.rate_limit_per_minute`` becomes optional: empty follows the server's GATEWAY_RATE_LIMIT.

Existing rows holding 120 become empty. Until now no page could set the limit and the model's default of 120
was stored in every row, so a 120 means "never chosen", not "chosen to be 120": emptying it is what lets
the documented GATEWAY_RATE_LIMIT apply to them. Where GATEWAY_RATE_LIMIT is unset (120) nothing changes for
any client. Rows holding any other value were set on purpose (Django admin, a script) and keep it.

Going back fills empty rows with the limit they follow at that moment, so the effective limit is unchanged.
"""

import django.core.validators
from django.conf import settings
from django.db import migrations, models

OLD_DEFAULT = 120


def forget_the_old_default(apps, schema_editor):
    Workspace = apps.get_model("workspaces", "Workspace")
    Workspace.objects.filter(rate_limit_per_minute=OLD_DEFAULT).update(rate_limit_per_minute=None)


def fill_in_the_followed_limit(apps, schema_editor):
    Workspace = apps.get_model("workspaces", "Workspace")
    Workspace.objects.filter(rate_limit_per_minute__isnull=True).update(
        rate_limit_per_minute=settings.GATEWAY_RATE_LIMIT_DEFAULT
    )


class Migration(migrations.Migration):
    dependencies = [("workspaces", "0003_audit_subject")]

    operations = [
        migrations.AlterField(
            model_name="workspace",
            name="rate_limit_per_minute",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Requests per minute each token of this workspace may make through the gateway; "
                "empty follows the server's GATEWAY_RATE_LIMIT.",
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(1),
                    django.core.validators.MaxValueValidator(1000000),
                ],
            ),
        ),
        migrations.RunPython(forget_the_old_default, fill_in_the_followed_limit),
    ]
