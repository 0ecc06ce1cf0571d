"""How long the Members tab takes with many members: ``.venv/bin/python -m benchmarks.members_tab``.

Starts Aerostack under gunicorn (``tests/live.py``: SQLite, or a scratch PostgreSQL database with
``DATABASE_URL``), creates a workspace with ``--members`` members (default 200), each with two active tokens
and one revoked, ``--events`` usage rows each (default 50: tool calls and lists), and ``--invites`` pending
invites, then logs in as the owner and fetches the Members tab ``--requests`` times over one keep-alive
connection. Prints the median, p95 and max of the whole HTTP round trip and the page size. A measurement,
never an exit status.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time

import requests

from tests.live import live_server

SETUP = """
import json, random
from datetime import timedelta
from django.contrib.auth.models import User
from django.utils import timezone
from gateway.models import UsageEvent
from tokens.services import token_create, token_revoke
from workspaces.models import Invite, Member
from workspaces.services import workspace_create
owner = User.objects.create_user(username="owner@example.com", password="bench-password-1")
ws = workspace_create(name="Bench", owner=owner)
now = timezone.now()
members = [
    Member.objects.create(workspace=ws, user=User.objects.create_user(username=f"m{{n}}@example.com"),
                          role="admin" if n % 10 == 0 else "member")
    for n in range({members} - 1)
]
events = []
for member in members:
    created = [token_create(workspace=ws, holder=member, name=f"t{{i}}", expires_in=None, created_by=owner)
               for i in range(3)]
    token_revoke(token=created[2].token, actor=owner)
    for e in range({events}):
        events.append(UsageEvent(workspace=ws, member=member, token=created[0].token, outcome="ok",
                                 method="tools/call" if e % 5 else "tools/list", tool="py__add",
                                 created_at=now - timedelta(minutes=random.randint(1, 100000))))
UsageEvent.objects.bulk_create(events, batch_size=5000)
for n in range({invites}):
    Invite.objects.create(workspace=ws, email=f"invitee{{n}}@example.com", secret_hash=f"{{n:064x}}",
                          invited_by=owner, created_at=now, sent_at=now, expires_at=now + timedelta(days=7))
print(json.dumps({{"slug": ws.slug, "usage_rows": UsageEvent.objects.count()}}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--invites", type=int, default=20)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args(argv)
    with live_server() as server:
        started = time.monotonic()
        setup = SETUP.format(members=args.members, events=args.events, invites=args.invites)
        data = json.loads(server.manage("shell", "-c", setup).strip().splitlines()[-1])
        print(
            f"setup: {args.members} members, {data['usage_rows']} usage rows "
            f"in {time.monotonic() - started:.1f} s"
        )
        session = requests.Session()
        session.trust_env = False
        login = session.get(f"{server.url}/accounts/login/", timeout=30).text
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login)
        assert csrf
        session.post(
            f"{server.url}/accounts/login/",
            data={
                "username": "owner@example.com",
                "password": "bench-password-1",
                "csrfmiddlewaretoken": csrf.group(1),
            },
            headers={"Referer": f"{server.url}/accounts/login/"},
            timeout=30,
        )
        url = f"{server.url}/workspaces/{data['slug']}/members/"
        page = session.get(url, timeout=30)  # warm-up
        rows = page.text.count('id="member-')
        assert page.status_code == 200 and rows == args.members, (page.status_code, rows)
        times = []
        for _ in range(args.requests):
            begin = time.perf_counter()
            response = session.get(url, timeout=30)
            times.append((time.perf_counter() - begin) * 1000)
            assert response.status_code == 200
        times.sort()
        p95 = times[min(len(times) - 1, round(len(times) * 0.95))]
        print(
            f"Members tab, {rows} members, {len(page.content) // 1024} KiB: "
            f"median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms, max {times[-1]:.1f} ms "
            f"over {len(times)} requests"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
