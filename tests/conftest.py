"""Shared personas, as in healthchecks' tests: alice owns the workspace, amy is an admin, bob a member,
charlie a stranger with a workspace of his own."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.cache import cache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.test import Client

from tests.factories import PASSWORD, MemberFactory, UserFactory, WorkspaceFactory
from tests.migrating import migrator  # noqa: F401  (the fixture, shared by every migration test)
from workspaces.models import Member, Workspace


def need(condition: bool, why: str) -> None:
    """Skip when a part of the machine is missing (a fresh laptop); fail instead in CI, where
    AEROSTACK_REQUIRE_ALL=1 says every part must be there and every test must run."""
    if condition:
        return
    if os.environ.get("AEROSTACK_REQUIRE_ALL") == "1":
        pytest.fail(f"required in CI: {why}")
    pytest.skip(why)


def _database_vendor() -> str:
    from django.conf import settings

    engine = str(settings.DATABASES["default"]["ENGINE"])
    return "postgresql" if "postgresql" in engine else "sqlite"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests of the other database backend (``only_on``): they do not apply to this run, so
    they are not skips (a skip in CI means a missing part and fails the run)."""
    vendor = _database_vendor()
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("only_on")
        (drop if marker is not None and vendor not in marker.args else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (AEROSTACK_REQUIRE_ALL=1) every collected test must run: a skip fails the run."""
    if os.environ.get("AEROSTACK_REQUIRE_ALL") == "1" and _skipped and session.exitstatus == 0:
        print(f"\nAEROSTACK_REQUIRE_ALL=1: {len(_skipped)} test(s) skipped; CI requires every test to run:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@dataclass
class Team:
    workspace: Workspace
    alice: Member  # owner
    amy: Member  # admin
    bob: Member  # member
    charlie: Member  # owner of another workspace, stranger here
    other: Workspace


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings) -> None:  # type: ignore[no-untyped-def]
    # PBKDF2 with a million rounds costs ~0.3 s a user; tests make dozens. Production keeps the default.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _gateway_test_settings(settings) -> None:  # type: ignore[no-untyped-def]
    # Test upstreams listen on 127.0.0.1; usage rows are written at once so tests can read them.
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    settings.GATEWAY_USAGE_ASYNC = False


@pytest.fixture(autouse=True)
def _still_rate_limit_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fixed windows turn over every minute; a test that straddled a turn would see its counters reset.
    from gateway import limits

    frozen = limits.clock()
    monkeypatch.setattr(limits, "clock", lambda: frozen)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Rate-limit counters, sessions and one-time form ids live in the cache: each test starts from zero.

    A shared Redis is not cleared (FLUSHDB would pull keys from under parallel workers and live servers);
    each test gets a key prefix of its own instead.
    """
    if isinstance(caches["default"], LocMemCache):
        cache.clear()
        yield
        return
    previous = cache.key_prefix
    cache.key_prefix = f"{previous}-test-{uuid.uuid4().hex[:12]}"
    try:
        yield
    finally:
        cache.key_prefix = previous


@pytest.fixture
def one_cache_prefix(_fresh_cache: None) -> Iterator[None]:
    """The test's cache key prefix (``_fresh_cache``) in every thread: Django gives each thread its own cache
    object, made with the configured prefix, so a test whose work crosses threads (the bus, event loops, check
    threads) would otherwise read and write other keys there. Undone before ``_fresh_cache`` restores."""
    if isinstance(caches["default"], LocMemCache):
        yield
        return
    prefix = cache.key_prefix
    backend = type(caches["default"])
    backend.key_prefix = property(lambda self: prefix, lambda self, value: None)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        del backend.key_prefix  # type: ignore[attr-defined]


@pytest.fixture
def team(db: None) -> Team:
    workspace = WorkspaceFactory(name="Acme Tools", slug="acme-tools")
    other = WorkspaceFactory(name="Charlie's", slug="charlies")
    return Team(
        workspace=workspace,
        alice=MemberFactory(
            workspace=workspace, user=UserFactory(username="alice@example.com"), role=Member.Role.OWNER
        ),
        amy=MemberFactory(
            workspace=workspace, user=UserFactory(username="amy@example.com"), role=Member.Role.ADMIN
        ),
        bob=MemberFactory(
            workspace=workspace, user=UserFactory(username="bob@example.com"), role=Member.Role.MEMBER
        ),
        charlie=MemberFactory(
            workspace=other, user=UserFactory(username="charlie@example.com"), role=Member.Role.OWNER
        ),
        other=other,
    )


def login(client: Client, member: Member) -> Client:
    assert client.login(username=member.user.username, password=PASSWORD)
    return client


@pytest.fixture
def csrf_client() -> Client:
    return Client(enforce_csrf_checks=True)


@pytest.fixture(scope="session")
def py_upstream() -> Iterator[Any]:
    """The official Python SDK's MCP server (tests/e2e/py_upstream.py) on 127.0.0.1, for the whole run."""
    from tests.e2e.upstreams import start_python_upstream

    upstream = start_python_upstream()
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture(scope="session")
def modern_upstream() -> Iterator[Any]:
    """A modern-only (2026-07-28) upstream: the SDK server behind a gate (tests/e2e/modern_upstream.py)."""
    from tests.e2e.upstreams import start_modern_upstream

    upstream = start_modern_upstream()
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture(scope="session")
def everything_upstream() -> Iterator[Any]:
    """@modelcontextprotocol/server-everything (npm, pinned in tests/e2e/package.json) on 127.0.0.1."""
    from tests.e2e.upstreams import node_available, start_everything_server

    need(node_available(), "node is not installed: these tests need it for server-everything")
    upstream = start_everything_server()
    try:
        yield upstream
    finally:
        upstream.stop()
