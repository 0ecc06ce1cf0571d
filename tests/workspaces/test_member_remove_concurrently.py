"""Two managers removing each other at the same moment, on real connections in two threads.

Every member service locks the workspace row (SELECT ... FOR UPDATE on PostgreSQL; SQLite's IMMEDIATE
transactions serialise writers) and re-reads the memberships under the lock. So the second remover finds that
it was removed itself and is refused: the workspace keeps an owner, and exactly one removal is recorded.
Without the lock both would pass their checks on the state they read first and both would be removed.

The race runs in a fresh process against a fresh database of its own (the in-memory SQLite of the test run
cannot show real lock waits): on PostgreSQL, and on SQLite exactly as deployed (a WAL file).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from tests.conftest import need
from tests.live import ROOT, scratch_database, server_env

DATABASE_URL = os.environ.get("DATABASE_URL") or os.environ.get(
    "AEROSTACK_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"
)

RACE = """
import json, threading, time
from django.db import connections
from django.contrib.auth.models import User
from workspaces import services
from workspaces.models import AuditEvent, Member
from workspaces.services import member_remove, workspace_create
from tests.factories import make_token

ws = workspace_create(name="Race", owner=User.objects.create_user(username="alice@example.com"))
alice = ws.members.get()
amy = Member.objects.create(workspace=ws, user=User.objects.create_user(username="amy@example.com"), role="{role}")
ada = Member.objects.create(workspace=ws, user=User.objects.create_user(username="ada@example.com"), role="{role}")
if "{role}" == "owner":  # amy and ada are the only owners: removing both would leave none
    Member.objects.filter(pk=alice.pk).update(role="member")
tokens = {{m.pk: make_token(m).token.pk for m in (amy, ada)}}
HOLD = 0.4
locked = services._lock_workspace
def slow_lock(workspace_id):
    workspace = locked(workspace_id)
    time.sleep(HOLD)  # whoever holds the lock keeps it a while: the other one certainly waits on it
    return workspace
services._lock_workspace = slow_lock
barrier = threading.Barrier(2)
outcomes = {{}}
def run(actor, target):
    try:
        barrier.wait(timeout=10)
        member_remove(actor=actor, member=target)
        outcomes[actor.pk] = "removed"
    except Exception as exc:
        outcomes[actor.pk] = type(exc).__name__ + ": " + str(exc)
    finally:
        connections.close_all()
threads = [threading.Thread(target=run, args=(amy, ada)), threading.Thread(target=run, args=(ada, amy))]
started = time.monotonic()
[t.start() for t in threads]
[t.join(timeout=60) for t in threads]
from tokens.models import Token
print(json.dumps({{
    "seconds": time.monotonic() - started,
    "outcomes": sorted(outcomes.values()),
    "current": sorted(m.user.username for m in Member.objects.current().filter(workspace=ws)),
    "owners": Member.objects.current().filter(workspace=ws, role="owner").count(),
    "removals": AuditEvent.objects.filter(action="member.remove").count(),
    "active_tokens": Token.objects.filter(revoked_at__isnull=True).count(),
}}))
"""


def _services_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect(DATABASE_URL, connect_timeout=3):
            return True
    except Exception:
        return False


def _race(backend: str, role: str) -> dict[str, object]:
    import subprocess
    import sys

    with tempfile.TemporaryDirectory(prefix="aerostack-race-") as tmp:
        env = server_env(Path(tmp), {"DJANGO_SETTINGS_MODULE": "aerostack.settings"})
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        if backend == "postgresql":
            env["DATABASE_URL"] = DATABASE_URL
        with scratch_database(env):

            def manage(*args: str) -> str:
                result = subprocess.run(
                    [sys.executable, str(ROOT / "manage.py"), *args],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=180,
                )
                assert result.returncode == 0, result.stderr
                return result.stdout

            manage("migrate", "--noinput")
            return json.loads(manage("shell", "-c", RACE.format(role=role)).strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.services
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
@pytest.mark.parametrize("role", ["owner", "admin"])
def test_two_managers_removing_each_other_remove_exactly_one(backend: str, role: str) -> None:
    if backend == "postgresql":
        need(_services_reachable(), f"PostgreSQL ({DATABASE_URL}) is needed for the concurrent-removal test")
    result = _race(backend, role)
    outcomes = result["outcomes"]
    assert isinstance(outcomes, list)
    assert outcomes[0].startswith("NotAllowed: You are no longer a member"), result
    assert outcomes[1] == "removed", result
    assert float(result["seconds"]) >= 2 * 0.4 * 0.9, ("the removals did not wait for each other", result)  # type: ignore[arg-type]
    current = result["current"]
    assert isinstance(current, list) and len(current) == 2 and "alice@example.com" in current, result
    assert result["owners"] == 1, result
    assert result["removals"] == 1 and result["active_tokens"] == 1, result
