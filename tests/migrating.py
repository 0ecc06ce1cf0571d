"""Migration tests' one helper: migrate the test database to chosen targets, and always give it back at
every app's newest migration.

A migration test goes backwards (its "before" state), and going back in one app also unapplies the later
migrations of the apps that depend on it. A test that then stops at its own "after" target, or fails between
the two, left older tables to the next test on its xdist worker (clean-clone CI: ``gateway_server has no
column named url_encrypted``). The ``migrator`` fixture migrates every app to its leaf node at teardown,
whatever the test did.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.apps.registry import Apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

Targets = list[tuple[str, str]]


class Migrator:
    def migrate(self, targets: Targets) -> Apps:
        """Migrate to ``targets`` and return the historical models of that state."""
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(targets)
        return executor.loader.project_state(targets).apps

    def latest(self) -> Apps:
        """Every app at its newest migration (where the rest of the suite expects the schema)."""
        return self.migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


@contextmanager
def given_back_at_latest() -> Iterator[Migrator]:
    """A migrator whose database is at every app's newest migration afterwards, even when the block fails."""
    helper = Migrator()
    try:
        yield helper
    finally:
        helper.latest()


@pytest.fixture
def migrator(transactional_db: None) -> Iterator[Migrator]:
    with given_back_at_latest() as helper:
        yield helper
