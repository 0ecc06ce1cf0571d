"""0004_rate_limit_follows_setting: the stored old default (120) becomes "follow GATEWAY_RATE_LIMIT"."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)
BEFORE = [("workspaces", "0003_audit_subject")]
AFTER = [("workspaces", "0004_rate_limit_follows_setting")]


def _migrate(targets: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_it_empties_the_old_default_and_keeps_chosen_limits(settings) -> None:  # type: ignore[no-untyped-def]
    old = _migrate(BEFORE)
    workspace = old.get_model("workspaces", "Workspace")
    workspace.objects.create(name="Default", slug="default", rate_limit_per_minute=120)
    workspace.objects.create(name="Chosen", slug="chosen", rate_limit_per_minute=300)
    new = _migrate(AFTER)
    limits = dict(
        new.get_model("workspaces", "Workspace").objects.values_list("slug", "rate_limit_per_minute")
    )
    assert limits == {"default": None, "chosen": 300}


def test_it_goes_back_to_the_limit_followed(settings) -> None:  # type: ignore[no-untyped-def]
    settings.GATEWAY_RATE_LIMIT_DEFAULT = 250
    new = _migrate(AFTER)
    new.get_model("workspaces", "Workspace").objects.create(name="Follows", slug="follows")
    old = _migrate(BEFORE)
    assert old.get_model("workspaces", "Workspace").objects.get(slug="follows").rate_limit_per_minute == 250
    _migrate(AFTER)
