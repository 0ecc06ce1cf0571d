"""locust driver of the load suite: one locust user per planned client (``benchmarks/load_scenario.py``).

Started by ``benchmarks/load.py`` as ``python -m locust -f benchmarks/locustfile.py --headless ...`` with
``AEROSTACK_LOAD_PLAN`` naming the plan (a JSON file: the record folder, the duration and one entry per
client). locust spawns the users and schedules their requests and think time; each exchange is also reported
to locust's own statistics (``--csv``), rate-limited answers under the request type ``429``.

The users end the run themselves: past the duration each one stops before its next request, and the last
one to stop quits locust. locust's own ``--run-time`` is only a safety net: when it fires, locust kills the
users that are between requests and may kill one in the middle of a request too (seen with 2.47: the gateway
then logs a call that no client recorded, and the usage-log check fails).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import gevent
from locust import User, task
from locust.exception import StopUser

from benchmarks.load_scenario import ClientPlan, LoadClient, open_records

_plan: dict[str, Any] = json.loads(Path(os.environ["AEROSTACK_LOAD_PLAN"]).read_text())
_records = Path(_plan["records"])
_indices = itertools.count()
_running: set[int] = set()
_deadline: list[float] = []  # set when the first user starts


class GatewayClient(User):
    """An MCP client of one workspace token, talking to every gateway node in turn."""

    def on_start(self) -> None:
        if not _deadline:
            _deadline.append(time.monotonic() + float(_plan["duration"]))
        # Users are spawned one by one in this one process: the n-th user is the n-th planned client.
        plan = ClientPlan.from_json(_plan["clients"][next(_indices) % len(_plan["clients"])])
        self.out = open_records(_records, plan.index)
        self.client = LoadClient(plan, self.out, on_record=self._report)
        _running.add(plan.index)

    def on_stop(self) -> None:
        self.client.close()
        self.out.close()
        _running.discard(self.client.plan.index)
        if not _running:
            gevent.spawn(self.environment.runner.quit)

    def wait_time(self) -> float:
        return float(self.client.plan.think_seconds)

    @task
    def exchange(self) -> None:
        if time.monotonic() >= _deadline[0]:
            raise StopUser()
        self.client.step()

    def _report(self, record: dict[str, Any]) -> None:
        """Every exchange (the handshake's two too) into locust's own statistics."""
        outcome = record.get("outcome")
        self.environment.events.request.fire(
            request_type="429" if outcome == "rate_limited" else "MCP",
            name=str(record.get("kind")),
            response_time=float(record.get("ms", 0.0)),
            response_length=0,
            context={},
            exception=RuntimeError(record.get("reason", "unexpected")) if outcome == "unexpected" else None,
        )
