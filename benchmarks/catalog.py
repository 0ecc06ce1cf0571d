"""The gateway's catalog under load: a big cached ``tools/list``, hung upstreams next door, a hostile list.

Run with ``make bench`` (after benchmarks.gateway) or ``.venv/bin/python -m benchmarks.catalog [--lists N]
[--json]``. With ``DATABASE_URL`` / ``REDIS_URL`` in the environment the gateway gets a scratch PostgreSQL
database and Redis (see ``tests/live.py``); without them, SQLite and the in-process cache.

1. Starts ``tests/e2e/fault_upstream.py`` (one process, one upstream per path) and Aerostack under gunicorn
   (1 worker, 8 threads), and creates, through the services: a workspace "hostile" whose one upstream serves a
   96 MiB tools/list (pages of 15 MiB); "big", 20 upstreams x 50 tools (~0.9 MB of tools/list); "hung", 15
   such upstreams and 5 that accept connections and never answer (timeout 60 s); five small healthy ones.
2. Memory: the worker's peak (VmHWM) and resident (VmRSS) memory before and after one tools/list of
   "hostile", from /proc.
3. Cached tools/list of "big": one cold list, then N sequential ones on one keep-alive connection (median,
   p99; the client only reads the bytes while timing) and the worker's CPU time per list.
4. Fairness: 6 clients (``--hung-clients``) list "hung" at once and keep listing it; meanwhile each healthy
   workspace lists its tools once (cold): their latency and tool count, and how many requests the hung
   upstreams got.

Everything runs on 127.0.0.1 and is stopped before the end. A figure is reported, never an exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import platform
import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.request import urlopen

from benchmarks.gateway import (
    SETUP_MARKER,
    BenchError,
    McpClient,
    ProcessCpu,
    cpu_delta,
    gunicorn_worker_pid,
    percentile,
)
from tests.live import LiveServer, live_server

_upstreams: Any = importlib.import_module("tests.e2e.upstreams")
start_fault_upstream: Callable[..., Any] = _upstreams.start_fault_upstream

BIG_SERVERS = 20
TOOLS_PER_SERVER = 50  # echo + 49
PAD = 680  # description bytes: ~0.9 KB per tool as exposed, like the figures in shared/guide/performance.md
HUNG = 5
HEALTHY_WORKSPACES = 5
HOSTILE_MIB = 96
HOSTILE_PAGE_MIB = 15
# Fewer than the worker's 8 threads: with 8, all of them wait on the hung workspace's rebuild and every other
# request queues behind them for the list deadline; that is the serving model's part (docs/reliability.md).
HUNG_CLIENTS = 6

SETUP_CODE = """
import json
from django.conf import settings
from django.contrib.auth.models import User
from gateway.services import server_create
from tokens.services import token_create
from workspaces.models import Member, Workspace
from workspaces.services import workspace_create

plan = json.loads({plan!r})
user = User.objects.create_user(username="bench-catalog@example.com", email="bench-catalog@example.com")
tokens = {{}}
for name, servers in plan.items():
    workspace = workspace_create(name=name, owner=user)
    Workspace.objects.filter(pk=workspace.pk).update(rate_limit_per_minute=1000000)
    for slug, url, timeout in servers:
        server_create(workspace=workspace, actor=user, name=slug, slug=slug, url=url, timeout_seconds=timeout)
    member = Member.objects.get(workspace=workspace, user=user)
    created = token_create(workspace=workspace, holder=member, name="bench", expires_in=None, created_by=user)
    tokens[name] = [workspace.slug, created.raw]
print({marker!r} + json.dumps({{
    "tokens": tokens,
    "database": settings.DATABASES["default"]["ENGINE"],
    "cache": settings.CACHES["default"]["BACKEND"],
}}))
"""


def _plan(base: str) -> dict[str, list[tuple[str, str, int]]]:
    def ok(name: str) -> str:
        return f"{base}/ok/{name}?tools={TOOLS_PER_SERVER - 1}&pad={PAD}"

    plan: dict[str, list[tuple[str, str, int]]] = {
        "hostile": [
            ("hostile", f"{base}/huge/hostile?on=tools/list&mb={HOSTILE_MIB}&page_mb={HOSTILE_PAGE_MIB}", 60)
        ],
        "big": [(f"big{n}", ok(f"big{n}"), 60) for n in range(BIG_SERVERS)],
        "hung": [(f"ok{n}", ok(f"hung-ok{n}"), 60) for n in range(BIG_SERVERS - HUNG)]
        + [(f"hung{n}", f"{base}/hang/hung{n}", 60) for n in range(HUNG)],
    }
    for n in range(HEALTHY_WORKSPACES):
        plan[f"healthy{n}"] = [(f"s{m}", ok(f"healthy{n}-{m}"), 60) for m in range(3)]
    return plan


def provision(server: LiveServer, base: str) -> dict[str, Any]:
    output = server.manage(
        "shell", "-c", SETUP_CODE.format(plan=json.dumps(_plan(base)), marker=SETUP_MARKER)
    )
    for line in output.splitlines():
        if line.startswith(SETUP_MARKER):
            return dict(json.loads(line[len(SETUP_MARKER) :]))
    raise BenchError("the setup snippet printed no result")  # its output may hold tokens: not shown


def memory_kib(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        fields = dict(line.split(":", 1) for line in handle if ":" in line)
    return {name: int(fields[name].split()[0]) for name in ("VmHWM", "VmRSS")}


class Lister:
    """One MCP session that times ``tools/list`` round trips (reading the bytes only)."""

    def __init__(self, url: str, token: str) -> None:
        self.client = McpClient(url, token)
        self.client.initialize()

    def list_raw(self) -> tuple[float, bytes]:
        message = {"jsonrpc": "2.0", "id": next(self.client.ids), "method": "tools/list"}
        started = time.perf_counter()
        status, _, raw = self.client._post(message)
        elapsed = time.perf_counter() - started
        if status != 200:
            raise BenchError(f"tools/list answered HTTP {status}: {raw[:200]!r}")
        return elapsed, raw

    def tool_count(self) -> tuple[float, int]:
        elapsed, raw = self.list_raw()
        return elapsed, len(json.loads(raw)["result"]["tools"])

    def close(self) -> None:
        self.client.close()


def stats(base: str) -> dict[str, int]:
    with urlopen(f"{base}/stats", timeout=10) as response:  # noqa: S310 (our own server on 127.0.0.1)
        return dict(json.loads(response.read()))


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"python": platform.python_version()}
    with contextlib.ExitStack() as stack:
        print("starting the fault upstream and Aerostack under gunicorn...", flush=True)
        upstream = start_fault_upstream()
        stack.callback(upstream.stop)
        server = stack.enter_context(
            live_server(
                workers=1,
                threads=8,
                extra_env={
                    "ALLOW_PRIVATE_UPSTREAMS": "true",
                    "GATEWAY_RATE_LIMIT": "1000000",
                    "GATEWAY_TOOLS_CACHE_SECONDS": "600",  # the cached path only, no rebuild mid-run
                },
            )
        )
        setup = provision(server, upstream.url)
        results["database"], results["cache"] = setup["database"], setup["cache"]
        tokens: dict[str, list[str]] = setup.pop("tokens")

        def lister(name: str) -> Lister:
            slug, token = tokens[name]
            made = Lister(f"{server.url}/ws/{slug}", token)
            stack.callback(made.close)
            return made

        worker = gunicorn_worker_pid(server.processes[0].pid)
        if worker is not None:
            print(f"memory: one tools/list of a {HOSTILE_MIB} MiB hostile upstream...", flush=True)
            hostile = lister("hostile")
            before = memory_kib(worker)
            elapsed, count = hostile.tool_count()
            time.sleep(1)
            after = memory_kib(worker)
            results["hostile"] = {
                "seconds": round(elapsed, 3),
                "tools": count,
                "peak_before_mb": round(before["VmHWM"] / 1024, 1),
                "peak_after_mb": round(after["VmHWM"] / 1024, 1),
                "rss_before_mb": round(before["VmRSS"] / 1024, 1),
                "rss_after_mb": round(after["VmRSS"] / 1024, 1),
            }

        print(f"cached tools/list, {BIG_SERVERS} upstreams x {TOOLS_PER_SERVER} tools...", flush=True)
        big = lister("big")
        cold, count = big.tool_count()
        size = len(big.list_raw()[1])
        for _ in range(20):
            big.list_raw()
        cpu = ProcessCpu(worker)
        cpu_before = cpu.seconds()
        timings = [big.list_raw()[0] for _ in range(args.lists)]
        cpu_used = cpu_delta(cpu, cpu_before)
        results["cached_list"] = {
            "tools": count,
            "bytes": size,
            "cold_s": round(cold, 3),
            "lists": len(timings),
            "median_ms": round(percentile(timings, 0.5) * 1000, 3),
            "p99_ms": round(percentile(timings, 0.99) * 1000, 3),
            # The worker's CPU per list: steadier than wall time on a shared machine.
            "worker_cpu_ms": None if cpu_used is None else round(cpu_used * 1000 / len(timings), 3),
        }

        print(
            f"fairness: {args.hung_clients} clients list a workspace with {HUNG} hung upstreams...",
            flush=True,
        )
        hung_listers = [lister("hung") for _ in range(args.hung_clients)]
        healthy = [lister(f"healthy{n}") for n in range(HEALTHY_WORKSPACES)]
        hung_timings: list[float] = []
        hung_counts: list[int] = []
        stop = threading.Event()

        def keep_listing(client: Lister) -> None:
            while not stop.is_set():
                try:
                    elapsed, count = client.tool_count()
                except Exception as exc:  # a broken connection is a figure too
                    print(f"  hung-workspace client: {exc}", flush=True)
                    return
                hung_timings.append(elapsed)
                hung_counts.append(count)

        threads = [
            threading.Thread(target=keep_listing, args=(client,), daemon=True) for client in hung_listers
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # the hung workspace's rebuilds are waiting on its hung upstreams now
        healthy_figures = []
        for client in healthy:
            elapsed, count = client.tool_count()
            healthy_figures.append((elapsed, count))
            time.sleep(0.5)
        time.sleep(max(0.0, args.hung_seconds - 0.5 * (HEALTHY_WORKSPACES + 1)))
        stop.set()
        for thread in threads:
            thread.join(70)
        errors = server.manage(
            "shell",
            "-c",
            "from gateway.models import Server\n"
            "for s in Server.objects.exclude(last_error='').exclude(slug__startswith='hung'):"
            " print(s.workspace.slug, s.slug, s.last_error)",
        )
        results["unexpected_server_errors"] = errors.strip().splitlines()
        counts = stats(upstream.url)
        hung_requests = sum(n for key, n in counts.items() if key.startswith("/hang/"))
        results["fairness"] = {
            "healthy_list_s": [round(elapsed, 3) for elapsed, _ in healthy_figures],
            "healthy_tools": [count for _, count in healthy_figures],
            "healthy_expected_tools": 3 * TOOLS_PER_SERVER,
            "hung_workspace_lists": len(hung_timings),
            "hung_clients": args.hung_clients,
            "hung_workspace_max_s": round(max(hung_timings or [0]), 3),
            "hung_workspace_median_s": round(percentile(hung_timings, 0.5), 3) if hung_timings else None,
            "hung_workspace_tools": sorted(set(hung_counts)),
            "requests_to_hung_upstreams": hung_requests,
            "seconds": args.hung_seconds,
        }
    report(results)
    return results


def report(results: dict[str, Any]) -> None:
    print("")
    print(
        f"Aerostack catalog benchmark ({results['database']}, {results['cache']}, python {results['python']})"
    )
    hostile = results.get("hostile")
    if hostile:
        print(
            f"  hostile {HOSTILE_MIB} MiB tools/list: answered in {hostile['seconds']} s with"
            f" {hostile['tools']} tools; worker peak {hostile['peak_before_mb']} ->"
            f" {hostile['peak_after_mb']} MB,"
            f" resident {hostile['rss_before_mb']} -> {hostile['rss_after_mb']} MB"
        )
    cached = results["cached_list"]
    print(
        f"  cached tools/list, {cached['tools']} tools ({cached['bytes'] / 1000:.0f} KB): median"
        f" {cached['median_ms']} ms, p99 {cached['p99_ms']} ms over {cached['lists']}"
        f" (cold {cached['cold_s']} s); worker CPU {cached['worker_cpu_ms']} ms per list"
    )
    fair = results["fairness"]
    print(
        f"  healthy workspaces' cold tools/list while {fair['hung_clients']} clients list one with {HUNG}"
        f" hung upstreams: {fair['healthy_list_s']} s, tools {fair['healthy_tools']}"
        f" (of {fair['healthy_expected_tools']})"
    )
    print(
        f"  the hung workspace: {fair['hung_workspace_lists']} lists in {fair['seconds']} s, median"
        f" {fair['hung_workspace_median_s']} s, max {fair['hung_workspace_max_s']} s, tools"
        f" {fair['hung_workspace_tools']}; requests to its hung upstreams:"
        f" {fair['requests_to_hung_upstreams']}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.catalog", description=__doc__.split("\n")[0])
    parser.add_argument("--lists", type=int, default=300, help="timed cached tools/list calls (300)")
    parser.add_argument(
        "--hung-seconds", type=float, default=30.0, help="how long the hung workspace is listed"
    )
    parser.add_argument(
        "--hung-clients", type=int, default=HUNG_CLIENTS, help="clients of the hung workspace"
    )
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    if args.json:
        print(json.dumps(results, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
