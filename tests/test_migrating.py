"""The migration tests' helper gives the schema back at every app's newest migration, whatever the test did."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder

from tests.migrating import given_back_at_latest

pytestmark = pytest.mark.django_db(transaction=True)


def _columns(table: str) -> set[str]:
    with connection.cursor() as cursor:
        return {c.name for c in connection.introspection.get_table_description(cursor, table)}


def _applied() -> set[tuple[str, str]]:
    return set(MigrationRecorder(connection).applied_migrations())


def test_a_test_that_went_back_in_one_app_and_failed_leaves_every_app_at_its_newest() -> None:
    newest = _applied()
    with pytest.raises(AssertionError, match="the test failed here"), given_back_at_latest() as migrator:
        # Going back in workspaces also unapplies the gateway migrations that depend on it (the CI failure:
        # a test stopped at workspaces 0004 and left gateway_server without url_encrypted).
        migrator.migrate([("workspaces", "0003_audit_subject")])
        assert "url_encrypted" not in _columns("gateway_server")
        migrator.migrate([("workspaces", "0004_rate_limit_follows_setting")])
        assert "url_encrypted" not in _columns("gateway_server")
        raise AssertionError("the test failed here")
    assert "url_encrypted" in _columns("gateway_server")
    assert _applied() == newest
    assert not MigrationExecutor(connection).migration_plan(
        MigrationExecutor(connection).loader.graph.leaf_nodes()
    )
