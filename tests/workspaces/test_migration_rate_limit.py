"""0004_rate_limit_follows_setting: the stored old default (120) becomes "follow GATEWAY_RATE_LIMIT"."""

from __future__ import annotations

import pytest

from tests.migrating import Migrator

pytestmark = pytest.mark.django_db(transaction=True)
BEFORE = [("workspaces", "0003_audit_subject")]
AFTER = [("workspaces", "0004_rate_limit_follows_setting")]


def test_it_empties_the_old_default_and_keeps_chosen_limits(migrator: Migrator) -> None:
    old = migrator.migrate(BEFORE)
    workspace = old.get_model("workspaces", "Workspace")
    workspace.objects.create(name="Default", slug="default", rate_limit_per_minute=120)
    workspace.objects.create(name="Chosen", slug="chosen", rate_limit_per_minute=300)
    new = migrator.migrate(AFTER)
    limits = dict(
        new.get_model("workspaces", "Workspace").objects.values_list("slug", "rate_limit_per_minute")
    )
    assert limits == {"default": None, "chosen": 300}


def test_it_goes_back_to_the_limit_followed(migrator: Migrator, settings) -> None:  # type: ignore[no-untyped-def]
    settings.GATEWAY_RATE_LIMIT_DEFAULT = 250
    new = migrator.migrate(AFTER)
    new.get_model("workspaces", "Workspace").objects.create(name="Follows", slug="follows")
    old = migrator.migrate(BEFORE)
    assert old.get_model("workspaces", "Workspace").objects.get(slug="follows").rate_limit_per_minute == 250
