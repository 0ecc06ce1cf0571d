"""How long the API's token list takes with 1,000 tokens: ``.venv/bin/python -m benchmarks.api_tokens``.

Starts Aerostack under gunicorn (``tests/live.py``: SQLite, or a scratch PostgreSQL database with
``DATABASE_URL``), creates a workspace with ``--tokens`` tokens (default 1,000, 40 a member, a tenth revoked)
through the real service, then asks ``GET /api/v1/workspaces/<slug>/tokens`` with an API key ``--requests``
times over one keep-alive connection, for the first page (50) and for a page of 200, and walks all pages
as ``aerostack workspace token list`` does. Prints the median, p95 and max round trip. A measurement, never
an exit status.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import requests

from tests.live import live_server

SETUP = """
import json
from django.contrib.auth.models import User
from api.services import api_key_create
from tokens.services import token_create, token_revoke
from workspaces.services import workspace_create
owner = User.objects.create_user(username="owner@example.com", password="bench-password-1")
ws = workspace_create(name="Bench", owner=owner)
# 40 tokens per member: under the per-member cap of live tokens (TOKENS_PER_MEMBER_MAX, 50).
holders = [ws.members.get()] + [
    ws.members.create(user=User.objects.create_user(username=f"m{{n}}@example.com"), role="member")
    for n in range(({tokens} - 1) // 40)
]
for n in range({tokens}):
    holder = holders[n // 40]
    token = token_create(workspace=ws, holder=holder, name=f"t{{n}}", expires_in=None, created_by=owner).token
    if n % 10 == 0:
        token_revoke(token=token, actor=owner)
print(json.dumps({{"slug": ws.slug, "key": api_key_create(user=owner, name="bench", expires_in=None).raw}}))
"""


def _measure(session: requests.Session, url: str, requests_count: int, **params: Any) -> list[float]:
    timings = []
    for _ in range(requests_count):
        started = time.perf_counter()
        response = session.get(url, params=params, timeout=60)
        timings.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return timings


def _line(label: str, timings: list[float]) -> str:
    ordered = sorted(timings)
    p95 = ordered[max(int(len(ordered) * 0.95) - 1, 0)]
    median = statistics.median(ordered)
    return f"{label:<32} median {median:7.1f} ms  p95 {p95:7.1f} ms  max {ordered[-1]:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    # The per-key limit would refuse a long run; this measures the list, not the limit.
    with live_server(workers=1, threads=4, extra_env={"API_RATE_LIMIT": "1000000"}) as server:
        data = json.loads(
            server.manage("shell", "-c", SETUP.format(tokens=args.tokens)).strip().splitlines()[-1]
        )
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {data['key']}"
        url = f"{server.url}/api/v1/workspaces/{data['slug']}/tokens"
        assert session.get(url, timeout=60).json()["count"] == args.tokens
        _measure(session, url, 5)  # warm up
        print(f"{args.tokens} tokens, {args.requests} requests each, one keep-alive connection")
        print(_line("first page (50)", _measure(session, url, args.requests)))
        print(_line("page of 200", _measure(session, url, args.requests, page_size=200)))
        walks = []
        for _ in range(max(args.requests // 10, 3)):
            started = time.perf_counter()
            page, seen = 1, 0
            while True:
                body = session.get(url, params={"page": page, "page_size": 200}, timeout=60).json()
                seen += len(body["results"])
                if not body["next"]:
                    break
                page += 1
            assert seen == args.tokens
            walks.append((time.perf_counter() - started) * 1000)
        print(_line(f"all {args.tokens} (pages of 200)", walks))


if __name__ == "__main__":
    main()
