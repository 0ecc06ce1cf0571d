"""The load suite: many MCP clients on two gateway nodes (PostgreSQL + Redis), and what must hold under it.

Run with ``make stress`` (the full run: 32 clients for 60 s, driven by locust) or
``.venv/bin/python -m benchmarks.load [--clients N] [--duration S] [--driver locust|threads] ...``; a short
run of the same checks is an end-to-end test of ``make test`` (``tests/e2e/test_load.py``).

1. Starts the real upstreams of the e2e suite on 127.0.0.1: the official Python SDK server
   (``tests/e2e/py_upstream.py``: ``add``, ``echo``, ``fail`` and ``slow``, here 1-3 s with progress and log
   notifications) and ``@modelcontextprotocol/server-everything`` (``echo``, ``get-sum``).
2. Starts ``--nodes`` gunicorn nodes of ``--workers`` workers each on one scratch PostgreSQL database and
   one Redis (``DATABASE_URL`` / ``REDIS_URL``, see ``tests/live.py``), and creates through the services two
   workspaces with a high limit and one whose limit (``--rate-limit``, 120/min) its clients are meant to
   exceed, each with both upstreams and several tokens.
3. Runs the clients of ``benchmarks/load_scenario.py`` for ``--duration`` seconds. Each sends its requests
   to the nodes in turn; each exchange is written down by the client.
4. Checks, from the clients' records and the gateway's database:
   - every answer was the documented one (a tool's right result, ``isError`` for the failing tool, and for
     a token over its limit HTTP 429 with JSON-RPC -32000 and a Retry-After equal to the window's end);
   - rate limits are exact per token across the nodes: in each fixed window the counts the gateway reported
     (``RateLimit: r=``) are exactly 1..n, n is exactly the limit in every window that refused a request,
     and only the limited workspace's tokens are refused;
   - the usage log is complete: once the background writers flushed, the gateway's UsageEvent rows per
     token, outcome and tool are exactly the tool calls and refusals its clients saw;
   - and reports the RSS of every gateway worker before and after (and its peak), p50/p95/p99 latency per
     tool, requests per outcome and per node.
5. Writes the summary as JSON and markdown (``--out``, ``var/load/``) and exits 1 when a check failed.

Everything runs on 127.0.0.1, and everything started here is stopped before the end.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.gateway import percentile
from benchmarks.load_scenario import ClientPlan, LoadClient, open_records
from tests.live import ROOT, LiveServer, live_cluster
from tokens.format import hash_token

# Imported by name so that mypy does not follow it (tests/ is outside the strict type check).
_upstreams: Any = importlib.import_module("tests.e2e.upstreams")

HIGH_LIMIT = 1_000_000  # per minute: the workspaces whose tokens must never be refused
WINDOW_SECONDS = 60  # the gateway's per-token window (gateway/limits.py, gateway/views.py)
USAGE_FLUSH_TIMEOUT = 60.0
WARM_UP_STEPS = 5  # per node and workspace: below the limited workspace's limit, handshake included
STOP_TIMEOUT = 30  # seconds a request in flight may take to finish at the end of the run
TOOL_KINDS_PREFIXES = ("py__", "ev__")
SETUP = """
import json
from django.contrib.auth.models import User
from gateway.services import server_create
from tokens.services import token_create
from workspaces.models import Workspace
from workspaces.services import workspace_create
plan = json.loads({plan!r})
owner = User.objects.create_user(username="load-owner@example.com", password="a-long-password-1")
out = {{"workspaces": {{}}, "limits": {{}}, "tokens": []}}
for spec in plan:
    ws = workspace_create(name=spec["name"], owner=owner)
    # Before any token exists: the limit travels with each cached token.
    Workspace.objects.filter(pk=ws.pk).update(rate_limit_per_minute=spec["limit"])
    member = ws.members.get()
    for name, slug in (("Python", "py"), ("Everything", "ev")):
        url = spec["python" if slug == "py" else "everything"]
        server_create(workspace=ws, actor=owner, name=name, slug=slug, url=url, timeout_seconds=30)
    out["workspaces"][spec["name"]] = ws.slug
    out["limits"][spec["name"]] = spec["limit"]
    for i in range(spec["tokens"] + 1):
        role = "warmup" if i == spec["tokens"] else "load"
        created = token_create(
            workspace=ws, holder=member, name=f"{{role}}-{{i}}", expires_in=None, created_by=owner
        )
        token = {{"id": created.token.pk, "raw": created.raw, "role": role, "workspace": spec["name"]}}
        out["tokens"].append(token)
print(json.dumps(out))
"""


class LoadError(RuntimeError):
    """The run could not take place (a service missing, a server that did not start)."""


@dataclass(frozen=True)
class LoadConfig:
    clients: int = 32
    duration: float = 60.0
    nodes: int = 2
    workers: int = 3
    threads: int = 8
    rate_limit: int = 120
    driver: str = "locust"
    out: Path = ROOT / "var" / "load"
    think_seconds: float = 0.05
    fast_think_seconds: float = 0.02
    seed: int = 1


# --------------------------------------------------------------------------- services and processes


def service_urls() -> tuple[str, str]:
    """PostgreSQL and Redis for the run: ``DATABASE_URL`` / ``REDIS_URL``, else the test defaults."""
    database = os.environ.get("DATABASE_URL") or os.environ.get(
        "AEROSTACK_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"
    )
    redis_url = os.environ.get("REDIS_URL") or os.environ.get(
        "AEROSTACK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"
    )
    return database, redis_url


def services_reachable(database: str, redis_url: str) -> bool:
    try:
        import psycopg
        import redis

        with psycopg.connect(database, connect_timeout=3):
            pass
        return bool(redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping())
    except Exception:
        return False


def worker_pids(master: int) -> list[int]:
    """The worker processes of a gunicorn master, from /proc/<master>/task/*/children."""
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{master}/task"):
            with open(f"/proc/{master}/task/{task}/children", encoding="ascii") as handle:
                children.extend(int(pid) for pid in handle.read().split())
    return sorted(children)


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
    return values


def worker_memory(servers: list[LiveServer]) -> list[dict[str, Any]]:
    rows = []
    for node, server in enumerate(servers):
        for pid in worker_pids(server.processes[0].pid):
            kib = memory_kib(pid)
            rows.append({"node": node, "pid": pid, "rss_kib": kib.get("VmRSS"), "peak_kib": kib.get("VmHWM")})
    return rows


def wait_for_workers(servers: list[LiveServer], workers: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(len(worker_pids(server.processes[0].pid)) >= workers for server in servers):
            return
        time.sleep(0.1)
    raise LoadError(f"not every node has {workers} workers after {timeout}s")


def machine() -> dict[str, Any]:
    def run(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.rstrip()  # noqa: S603
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "nproc": os.cpu_count(),
        "free_h": run("free", "-h"),
        "uptime": run("uptime"),
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
    }


# --------------------------------------------------------------------------- plan


def plan_workspaces(config: LoadConfig) -> tuple[list[dict[str, Any]], int]:
    """Workspaces to create (name, limit, tokens) and how many clients drive the limited one."""
    limited_clients = max(2, config.clients // 8)
    mixed_clients = config.clients - limited_clients
    if mixed_clients < 2:
        raise LoadError("at least 4 clients are needed: two workspaces with a normal limit and a limited one")
    tokens_per_workspace = max(2, mixed_clients // 7)
    return [
        {"name": "Load Alpha", "limit": HIGH_LIMIT, "tokens": tokens_per_workspace},
        {"name": "Load Beta", "limit": HIGH_LIMIT, "tokens": tokens_per_workspace},
        {"name": "Load Limited", "limit": config.rate_limit, "tokens": max(1, limited_clients // 2)},
    ], limited_clients


def plan_clients(
    config: LoadConfig, setup: dict[str, Any], nodes: list[str], limited_clients: int
) -> list[ClientPlan]:
    """Clients 0.. of the limited workspace first, then the others spread over the high-limit tokens."""
    load_tokens = [token for token in setup["tokens"] if token["role"] == "load"]
    limited = [token for token in load_tokens if token["workspace"] == "Load Limited"]
    others = [token for token in load_tokens if token["workspace"] != "Load Limited"]
    plans = []
    for index in range(config.clients):
        is_limited = index < limited_clients
        pool = limited if is_limited else others
        token = pool[(index if is_limited else index - limited_clients) % len(pool)]
        think = config.fast_think_seconds if is_limited else config.think_seconds
        mix = "fast" if is_limited else "mixed"
        plans.append(_client(index, token, setup, nodes, mix, think, config.seed * 1000 + index))
    return plans


def _client(
    index: int,
    token: dict[str, Any],
    setup: dict[str, Any],
    nodes: list[str],
    mix: str,
    think: float,
    seed: int,
) -> ClientPlan:
    return ClientPlan(
        limit=setup["limits"][token["workspace"]],
        index=index,
        token=token["raw"],
        token_id=token["id"],
        workspace=token["workspace"],
        slug=setup["workspaces"][token["workspace"]],
        nodes=tuple(nodes),
        mix=mix,
        think_seconds=think,
        seed=seed,
    )


# --------------------------------------------------------------------------- drivers


def drive_threads(plans: list[ClientPlan], records: Path, duration: float) -> None:
    """One thread per client until ``duration`` is over; a request in flight then still finishes."""
    deadline = time.monotonic() + duration
    errors: list[BaseException] = []

    def run(plan: ClientPlan) -> None:
        try:
            with open_records(records, plan.index) as out:
                client = LoadClient(plan, out)
                try:
                    while time.monotonic() < deadline:
                        client.step()
                        time.sleep(plan.think_seconds)
                finally:
                    client.close()
        except BaseException as exc:  # reported below: a crashed client must fail the run
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(plan,), name=f"load-{plan.index}") for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + STOP_TIMEOUT + 60)
    if errors or any(thread.is_alive() for thread in threads):
        raise LoadError(f"a client thread failed or hung: {errors[:3]!r}")


def drive_locust(plans: list[ClientPlan], records: Path, duration: float, work: Path) -> dict[str, Any]:
    """``locust --headless`` with one user per client (benchmarks/locustfile.py); returns its totals."""
    if importlib.util.find_spec("locust") is None:
        raise LoadError("locust is not installed: `make stress` installs it (the [load] extra)")
    plan_path = work / "plan.json"
    plan = {"records": str(records), "duration": duration, "clients": [asdict(p) for p in plans]}
    plan_path.write_text(json.dumps(plan))
    plan_path.chmod(0o600)  # holds the raw tokens of this run's scratch database
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "DJANGO"))}
    env.update({"AEROSTACK_LOAD_PLAN": str(plan_path), "PYTHONPATH": str(ROOT)})
    users = str(len(plans))
    csv_prefix = work / "locust"
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "benchmarks" / "locustfile.py"),
        "--headless",
        "--users",
        users,
        "--spawn-rate",
        users,
        "--run-time",
        f"{math.ceil(duration) + STOP_TIMEOUT + 30}s",  # a safety net: the users end the run themselves
        "--stop-timeout",
        str(STOP_TIMEOUT),
        "--csv",
        str(csv_prefix),
        "--only-summary",
        "--loglevel",
        "INFO",
        "--exit-code-on-error",
        "0",
    ]
    result = subprocess.run(  # noqa: S603 (our own interpreter and arguments)
        argv,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=duration + STOP_TIMEOUT + 120,
        stdin=subprocess.DEVNULL,
    )
    (work / "locust.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise LoadError(f"locust exited with {result.returncode}:\n{result.stderr[-4000:]}")
    totals: dict[str, Any] = {"version": _locust_version(), "stats_csv": f"{csv_prefix}_stats.csv"}
    stats = Path(f"{csv_prefix}_stats.csv")
    if stats.is_file():
        lines = stats.read_text().splitlines()
        header = lines[0].split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("Name") == "Aggregated":
                totals["requests"] = int(row["Request Count"])
                totals["failures"] = int(row["Failure Count"])
    return totals


def _locust_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("locust")
    except PackageNotFoundError:
        return "not installed"


# --------------------------------------------------------------------------- checks


def read_records(directory: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in sorted(directory.glob("client-*.jsonl")):
        records.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return records


def window_index(record: dict[str, Any], offset: int) -> int:
    """The gateway's rate-limit window a request was counted in (gateway/limits.py shifts each token's windows
    by ``crc32(hash) % 60`` seconds). The server counted it between sending and receiving; when a window
    turned in between, the reported reset (``t``, rounded up) tells which side: ~1 s before, ~60 s after."""
    sent = math.floor((float(record["sent"]) + offset) / WINDOW_SECONDS)
    received = math.floor((float(record["received"]) + offset) / WINDOW_SECONDS)
    if sent == received or record.get("reset") is None:
        return sent
    return received if record["reset"] > WINDOW_SECONDS / 2 else sent


@dataclass
class WindowCount:
    token_id: int
    window: int
    counted: list[int] = field(default_factory=list)  # the counts the gateway reported to admitted requests
    refused: int = 0
    by_node: Counter[str] = field(default_factory=Counter)


def rate_limit_windows(
    records: list[dict[str, Any]], offsets: dict[int, int], limits: dict[int, int]
) -> list[WindowCount]:
    windows: dict[tuple[int, int], WindowCount] = {}
    for record in records:
        if record.get("status") in (0, None) or record.get("remaining") is None:
            continue
        token_id = record["token_id"]
        index = window_index(record, offsets[token_id])
        entry = windows.setdefault((token_id, index), WindowCount(token_id, index))
        if record["status"] == 429:
            entry.refused += 1
            entry.by_node[f"node{record['node']}_429"] += 1
        else:
            entry.counted.append(limits[token_id] - record["remaining"])
            entry.by_node[f"node{record['node']}_ok"] += 1
    return sorted(windows.values(), key=lambda w: (w.token_id, w.window))


def check_rate_limits(
    windows: list[WindowCount], limits: dict[int, int], limited_tokens: set[int]
) -> list[str]:
    failures = []
    for w in windows:
        limit = limits[w.token_id]
        counted = sorted(w.counted)
        if counted != list(range(1, len(counted) + 1)):
            missing = sorted(set(range(1, max(counted, default=0) + 1)) - set(counted))
            duplicates = [n for n, c in Counter(counted).items() if c > 1]
            failures.append(
                f"token {w.token_id} window {w.window}: the counts of admitted requests are not 1..n "
                f"(missing {missing[:10]}, twice {duplicates[:10]})"
            )
        if w.refused and len(counted) != limit:
            failures.append(
                f"token {w.token_id} window {w.window}: {len(counted)} admitted, {w.refused} refused; "
                f"the limit is {limit}"
            )
        if w.refused and w.token_id not in limited_tokens:
            failures.append(f"token {w.token_id} (high limit) was refused {w.refused} times")
    for token_id in sorted(limited_tokens):
        if not any(w.refused for w in windows if w.token_id == token_id):
            failures.append(
                f"token {token_id} was never driven over its limit: the run proves nothing about it"
            )
    return failures


def usage_expected(records: list[dict[str, Any]]) -> dict[int, Counter[str]]:
    """The UsageEvent rows of each token: every routed tools/call and every refusal, by outcome and tool."""
    expected: dict[int, Counter[str]] = defaultdict(Counter)
    for record in records:
        token_id = record["token_id"]
        if record.get("status") == 429:
            expected[token_id]["rate_limited"] += 1
        elif record["kind"].startswith(TOOL_KINDS_PREFIXES) and record.get("outcome") in ("ok", "tool_error"):
            server, _, tool = record["kind"].partition("__")
            expected[token_id][f"{record['outcome']} {server} {tool}"] += 1
    return expected


def usage_found(database_url: str, token_ids: list[int]) -> dict[int, Counter[str]]:
    import psycopg

    found: dict[int, Counter[str]] = defaultdict(Counter)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT token_id, outcome, server_slug, tool, count(*) FROM gateway_usageevent "
            "WHERE token_id = ANY(%s) GROUP BY 1, 2, 3, 4",
            (token_ids,),
        ).fetchall()
    for token_id, outcome, server_slug, tool, count in rows:
        key = outcome if outcome == "rate_limited" else f"{outcome} {server_slug} {tool}"
        found[token_id][key] += count
    return found


def dump_usage(database_url: str, token_ids: list[int], path: Path) -> None:
    import psycopg

    with psycopg.connect(database_url) as conn, path.open("w") as out:
        cursor = conn.execute(
            "SELECT id, token_id, outcome, server_slug, tool, method, http_status, duration_ms, "
            "extract(epoch from created_at) AS at FROM gateway_usageevent WHERE token_id = ANY(%s) "
            "ORDER BY id",
            (token_ids,),
        )
        names = [column.name for column in cursor.description or []]
        for row in cursor:
            out.write(json.dumps(dict(zip(names, row, strict=True)), default=str) + "\n")


def wait_for_usage(
    read: Callable[[], dict[int, Counter[str]]], expected: dict[int, Counter[str]], timeout: float
) -> tuple[dict[int, Counter[str]], float]:
    """Poll until the usage log holds the expected rows (the writers flush every 0.25 s), then once more a
    second later, so that rows arriving late (too many) are seen too."""
    started = time.monotonic()
    total = sum(sum(c.values()) for c in expected.values())
    found = read()
    while sum(sum(c.values()) for c in found.values()) < total and time.monotonic() - started < timeout:
        time.sleep(0.5)
        found = read()
    waited = time.monotonic() - started
    time.sleep(1.0)
    return read(), waited


def check_usage(expected: dict[int, Counter[str]], found: dict[int, Counter[str]]) -> list[str]:
    failures = []
    for token_id in sorted(set(expected) | set(found)):
        want, have = expected.get(token_id, Counter()), found.get(token_id, Counter())
        if want != have:
            diff = {
                key: (want[key], have[key]) for key in sorted(set(want) | set(have)) if want[key] != have[key]
            }
            failures.append(f"usage log of token {token_id} (clients saw, log has): {diff}")
    return failures


def latency_table(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    by_kind: dict[str, list[float]] = defaultdict(list)
    for record in records:
        if record.get("outcome") in ("ok", "tool_error"):
            by_kind[record["kind"]].append(record["ms"])
        elif record.get("outcome") == "rate_limited":
            by_kind["(429 rate limited)"].append(record["ms"])
    return {
        kind: {
            "count": len(values),
            "p50_ms": round(percentile(values, 0.50), 2),
            "p95_ms": round(percentile(values, 0.95), 2),
            "p99_ms": round(percentile(values, 0.99), 2),
            "max_ms": round(max(values), 2),
        }
        for kind, values in sorted(by_kind.items())
    }


def analyse(
    records: list[dict[str, Any]],
    offsets: dict[int, int],
    limits: dict[int, int],
    limited_tokens: set[int],
    expected_clients: int,
) -> tuple[dict[str, Any], list[str]]:
    """Everything that can be judged from the clients' records alone (the usage log is checked apart)."""
    failures = []
    unexpected = [r for r in records if r.get("outcome") == "unexpected"]
    for record in unexpected[:20]:
        failures.append(
            f"unexpected answer: client {record['client']} node {record['node']} {record['kind']} "
            f"HTTP {record.get('status')}: {record.get('reason')}"
        )
    if len(unexpected) > 20:
        failures.append(f"... and {len(unexpected) - 20} more unexpected answers")
    clients = {record["client"] for record in records}
    if len(clients) != expected_clients:
        failures.append(f"{len(clients)} of {expected_clients} clients sent requests")
    nodes = Counter(f"node{record['node']}" for record in records)
    windows = rate_limit_windows(records, offsets, limits)
    rate_failures = check_rate_limits(windows, limits, limited_tokens)
    failures += rate_failures
    summary = {
        "requests": len(records),
        "outcomes": dict(sorted(Counter(record.get("outcome") for record in records).items())),
        "by_node": dict(sorted(nodes.items())),
        "by_kind": dict(sorted(Counter(record["kind"] for record in records).items())),
        "latency": latency_table(records),
        "rate_limit": {
            "exact": not rate_failures,
            "windows_checked": len(windows),
            "limited_tokens": [
                {
                    "token_id": w.token_id,
                    "window_start": datetime.fromtimestamp(
                        w.window * WINDOW_SECONDS - offsets[w.token_id], UTC
                    ).strftime("%H:%M:%S"),
                    "admitted": len(w.counted),
                    "refused": w.refused,
                    "by_node": dict(sorted(w.by_node.items())),
                }
                for w in windows
                if w.token_id in limited_tokens
            ],
        },
    }
    return summary, failures


# --------------------------------------------------------------------------- the run


@contextlib.contextmanager
def upstreams() -> Iterator[tuple[Any, Any]]:
    if not _upstreams.node_available():
        raise LoadError("node is not installed: the load suite needs it for server-everything")
    python = _upstreams.start_python_upstream()
    try:
        everything = _upstreams.start_everything_server()
        try:
            yield python, everything
        finally:
            everything.stop()
    finally:
        python.stop()


def warm_up(setup: dict[str, Any], nodes: list[str], workers: int, work: Path) -> None:
    """Catalogs built and upstream sessions opened on every node, with tokens that are not checked: on the
    high-limit workspaces as many clients at once as there are workers, so that (most likely) every worker has
    served requests before its memory is first read; on the limited one a single client, below its limit."""
    folder = work / "warmup"
    folder.mkdir()
    plans: list[ClientPlan] = []
    for token in (token for token in setup["tokens"] if token["role"] == "warmup"):
        parallel = 1 if token["workspace"] == "Load Limited" else workers * len(nodes)
        for _ in range(parallel):
            plans.append(_client(len(plans), token, setup, nodes, "mixed", 0.0, len(plans)))

    def run(plan: ClientPlan) -> None:
        with open_records(folder, plan.index) as out:
            client = LoadClient(plan, out)
            try:
                for _ in range(WARM_UP_STEPS * len(nodes)):
                    client.step()
            finally:
                client.close()

    with ThreadPoolExecutor(max_workers=len(plans)) as pool:
        list(pool.map(run, plans))
    bad = [r for r in read_records(folder) if r.get("outcome") == "unexpected"]
    if bad:
        raise LoadError(f"the warm-up failed: {bad[:3]}")


def run_load(config: LoadConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    database, redis_url = service_urls()
    if not services_reachable(database, redis_url):
        raise LoadError(f"PostgreSQL ({database}) and Redis ({redis_url}) are needed for the load suite")
    started_at = datetime.now(UTC)
    summary: dict[str, Any] = {
        "date": started_at.isoformat(timespec="seconds"),
        "config": {**asdict(config), "out": str(config.out)},
        "machine_before": machine(),
    }
    workspaces, limited_clients = plan_workspaces(config)
    env = {"DATABASE_URL": database, "REDIS_URL": redis_url, "ALLOW_PRIVATE_UPSTREAMS": "true"}
    with (
        tempfile.TemporaryDirectory(prefix="aerostack-load-") as tmp,
        upstreams() as (python, everything),
        live_cluster(config.nodes, workers=config.workers, threads=config.threads, extra_env=env) as servers,
    ):
        work = Path(tmp)
        log(f"{config.nodes} nodes x {config.workers} workers on {database.rsplit('@', 1)[-1]} + Redis")
        specs = [{**spec, "python": python.url, "everything": everything.url} for spec in workspaces]
        out = servers[0].manage("shell", "-c", SETUP.format(plan=json.dumps(specs)))
        setup = json.loads(out.strip().splitlines()[-1])
        nodes = [f"127.0.0.1:{server.port}" for server in servers]
        wait_for_workers(servers, config.workers)
        plans = plan_clients(config, setup, nodes, limited_clients)
        warm_up(setup, nodes, config.workers, work)
        records_dir = work / "records"
        records_dir.mkdir()
        memory_before = worker_memory(servers)
        log(f"{config.clients} clients for {config.duration:g}s ({config.driver})...")
        wall = time.monotonic()
        if config.driver == "locust":
            summary["locust"] = drive_locust(plans, records_dir, config.duration, work)
        else:
            drive_threads(plans, records_dir, config.duration)
        wall = time.monotonic() - wall  # the driver's whole run, its start-up included
        memory_after = worker_memory(servers)
        summary["machine_after"] = {"uptime": machine()["uptime"]}
        records = read_records(records_dir)
        # From the first request sent to the last answer received.
        span = max((r["received"] for r in records), default=0.0) - min(
            (r["sent"] for r in records), default=0.0
        )
        by_id = {token["id"]: token for token in setup["tokens"] if token["role"] == "load"}
        limit_of = {spec["name"]: spec["limit"] for spec in workspaces}
        offsets = {
            tid: zlib.crc32(hash_token(t["raw"]).encode()) % WINDOW_SECONDS for tid, t in by_id.items()
        }
        limits = {tid: limit_of[t["workspace"]] for tid, t in by_id.items()}
        limited = {tid for tid, t in by_id.items() if t["workspace"] == "Load Limited"}
        figures, failures = analyse(records, offsets, limits, limited, config.clients)
        expected = usage_expected(records)
        scratch = servers[0].env["DATABASE_URL"]
        found, waited = wait_for_usage(
            lambda: usage_found(scratch, sorted(by_id)), expected, USAGE_FLUSH_TIMEOUT
        )
        usage_failures = check_usage(expected, found)
        failures += usage_failures
        summary["records"] = str(keep_artifacts(config.out, started_at, work, summary.get("locust")))
        if usage_failures:  # the rows themselves, to hold against the records
            dump_usage(scratch, sorted(by_id), Path(summary["records"]) / "usage-rows.jsonl")
        logs = "".join(server.log_text() for server in servers)
        tracebacks = logs.count("Traceback (most recent call last)")
        if tracebacks:
            failures.append(f"the gateway logged {tracebacks} tracebacks")
    if {row["pid"] for row in memory_after} != {row["pid"] for row in memory_before}:
        failures.append("a gateway worker was restarted during the run (its pid changed)")
    memory = []
    for before in memory_before:
        after = next((row for row in memory_after if row["pid"] == before["pid"]), {})
        memory.append(
            {
                "node": before["node"],
                "pid": before["pid"],
                "rss_before_mib": _mib(before["rss_kib"]),
                "rss_after_mib": _mib(after.get("rss_kib")),
                "peak_mib": _mib(after.get("peak_kib")),
            }
        )
    summary.update(
        figures,
        driver_seconds=round(wall, 2),
        wall_seconds=round(span, 2),
        requests_per_second=round(len(records) / span, 1) if span else None,
        tokens={
            "load": len(by_id),
            "limited": sorted(limited),
            "limits": {t["workspace"]: limit_of[t["workspace"]] for t in by_id.values()},
        },
        usage_log={
            "expected_rows": sum(sum(c.values()) for c in expected.values()),
            "found_rows": sum(sum(c.values()) for c in found.values()),
            "flush_wait_seconds": round(waited, 2),
            "complete": not usage_failures,
        },
        memory=memory,
        failures=failures,
    )
    return summary


def keep_artifacts(out: Path, started_at: datetime, work: Path, locust: dict[str, Any] | None) -> Path:
    """The clients' records (no raw tokens), locust's log and statistics next to the summary, for a failed
    check to be looked into; returns the records' folder."""
    stamp = f"load-{started_at:%Y%m%dT%H%M%SZ}"
    kept = out / f"{stamp}-records"
    shutil.copytree(work / "records", kept, dirs_exist_ok=True)
    if (work / "locust.log").is_file():
        shutil.copy(work / "locust.log", kept / "locust.log")
    if locust is not None and Path(locust["stats_csv"]).is_file():
        locust["stats_csv"] = str(shutil.copy(locust["stats_csv"], out / f"{stamp}-locust-stats.csv"))
    return kept


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


# --------------------------------------------------------------------------- report


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def row(cells: list[Any]) -> str:
        return "| " + " | ".join(str(cell) for cell in cells) + " |"

    return [row(header), row(["---"] * len(header)), *(row(cells) for cells in rows)]


def markdown(summary: dict[str, Any]) -> str:
    cfg, before, after = summary["config"], summary["machine_before"], summary["machine_after"]
    usage, rate = summary["usage_log"], summary["rate_limit"]
    lines = [
        f"Load run of {summary['date']}: {cfg['clients']} clients for {cfg['duration']:g} s "
        f"({cfg['driver']}), {cfg['nodes']} nodes x {cfg['workers']} gunicorn workers x {cfg['threads']} "
        "threads, PostgreSQL + Redis.",
        "",
        f"- Machine: {before['nproc']} cores; load before: `{before['uptime']}`; after: `{after['uptime']}`",
        f"- Requests: {summary['requests']} in {summary['wall_seconds']} s "
        f"({summary['requests_per_second']}/s); by outcome: {summary['outcomes']}; "
        f"by node: {summary['by_node']}",
        f"- Rate limit exact across nodes: **{rate['exact']}** "
        f"({rate['windows_checked']} token windows checked)",
        f"- Usage log complete: **{usage['complete']}** ({usage['found_rows']} rows for "
        f"{usage['expected_rows']} calls and refusals seen by the clients; flushed within "
        f"{usage['flush_wait_seconds']} s)",
        f"- Checks failed: {len(summary['failures'])}",
        "",
    ]
    lines += _table(
        ["request", "count", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        [[kind, *row.values()] for kind, row in summary["latency"].items()],
    )
    lines.append("")
    lines += _table(
        ["limited token", "window from (UTC)", "admitted", "refused (429)", "by node"],
        [list(window.values()) for window in rate["limited_tokens"]],
    )
    lines.append("")
    lines += _table(
        ["node", "worker pid", "RSS before MiB", "RSS after MiB", "peak MiB"],
        [list(row.values()) for row in summary["memory"]],
    )
    if summary["failures"]:
        lines += ["", "Failed checks:", *[f"- {failure}" for failure in summary["failures"]]]
    return "\n".join(lines) + "\n"


def write_summary(summary: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = summary["date"].replace("-", "").replace(":", "").replace("+0000", "Z")
    json_path, md_path = out / f"load-{stamp}.json", out / f"load-{stamp}.md"
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    md_path.write_text(markdown(summary))
    return json_path, md_path


def parse_args(argv: list[str] | None = None) -> LoadConfig:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load",
        description="MCP clients on gateway nodes (PostgreSQL + Redis): errors, rate limits, usage log, RSS.",
    )
    defaults = LoadConfig()
    parser.add_argument("--clients", type=int, default=defaults.clients, help="concurrent clients (32)")
    parser.add_argument("--duration", type=float, default=defaults.duration, help="seconds (60)")
    parser.add_argument("--nodes", type=int, default=defaults.nodes, help="gateway nodes (2)")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="gunicorn workers per node (3)")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="threads per worker (8)")
    parser.add_argument(
        "--rate-limit", type=int, default=defaults.rate_limit, help="limited workspace, per min"
    )
    parser.add_argument("--driver", choices=["locust", "threads"], default=defaults.driver)
    parser.add_argument("--out", type=Path, default=defaults.out, help="summary folder (var/load)")
    args = parser.parse_args(argv)
    if args.clients < 4 or args.nodes < 1 or args.workers < 1 or args.duration <= 0 or args.rate_limit < 1:
        parser.error("need at least 4 clients, 1 node, 1 worker, a positive duration and rate limit")
    return LoadConfig(
        clients=args.clients,
        duration=args.duration,
        nodes=args.nodes,
        workers=args.workers,
        threads=args.threads,
        rate_limit=args.rate_limit,
        driver=args.driver,
        out=args.out,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        summary = run_load(config)
    except LoadError as exc:
        print(f"load suite: {exc}", file=sys.stderr)
        return 2
    json_path, md_path = write_summary(summary, config.out)
    print(markdown(summary))
    print(f"summary: {json_path} and {md_path}")
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
