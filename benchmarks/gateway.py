"""What the gateway adds to a ``tools/call``: the same client, the same tool, directly and through Aerostack.

Run with ``make bench`` (or ``.venv/bin/python -m benchmarks.gateway [--calls N] [--concurrency C]
[--per-thread M] [--json]``). With ``DATABASE_URL`` / ``REDIS_URL`` in the environment the gateway gets a
scratch PostgreSQL database and Redis (see ``tests/live.py``); without them, SQLite and the in-process cache.

1. Starts the official Python SDK upstream (``tests/e2e/py_upstream.py``) twice, stateful with JSON replies
   (``--json-response``) and stateful with SSE replies (the default), measures direct calls on both and keeps
   the faster one for both paths.
2. Starts Aerostack under gunicorn (1 worker, 8 threads) and creates a user, a workspace, a server pointing at
   the upstream and a token through the services, in the live server's own database. The raw token stays in
   this process's memory only.
3. Calls ``add(a=1, b=2)`` with one minimal keep-alive ``http.client`` client per thread: sequential calls
   alternating between both paths in blocks (so both see the same machine noise), then C threads with one
   connection each.
4. Prints median, p99, requests/s, the added latency against the targets, and the gateway worker's CPU
   seconds per 1000 calls (from ``/proc``). A miss is reported, never an exit status: this is a measurement.

Everything runs on 127.0.0.1, and everything started here is stopped before the end.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib
import itertools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.live import ROOT, LiveServer, free_port, live_server, server_env, wait_for_port

# Imported by name so that mypy does not follow it: tests/ is outside the strict type check (tests/e2e/
# upstreams.py has an unannotated helper), and this module only needs start_python_upstream().
_upstreams: Any = importlib.import_module("tests.e2e.upstreams")
start_python_upstream: Callable[..., Any] = _upstreams.start_python_upstream
RunningUpstream = Any

PROTOCOL_VERSION = "2025-11-25"
ACCEPT = "application/json, text/event-stream"
TOOL = "add"
ARGUMENTS = {"a": 1, "b": 2}
EXPECTED_TEXT = "3"
SERVER_SLUG = "py"
RATE_LIMIT = 1_000_000
TARGET_ADDED_MEDIAN_MS = 1.0
TARGET_ADDED_P99_MS = 5.0
# Issue 8: a scoped token may add at most this much to a tools/call's median over an unscoped one.
TARGET_SCOPED_MEDIAN_MS = 0.1
SETUP_MARKER = "AEROSTACK-BENCH-SETUP "
HTTP_TIMEOUT = 30.0
JOIN_TIMEOUT = 600.0
MODE_PROBE_CALLS = 300
MODE_PROBE_BLOCK = 50
CONCURRENT_WARMUP = 5
MAX_FAILURES = 50  # per path and phase label; beyond it the figures would mean nothing


class BenchError(RuntimeError):
    """The benchmark cannot go on: a server did not start, a handshake failed, too many calls failed."""


class CallFailed(BenchError):
    """One tools/call did not return the expected result: counted and reported, not timed."""


class Failures:
    """Failed calls per path (thread-safe), with the first message of each; too many stop the run."""

    def __init__(self, limit: int = MAX_FAILURES) -> None:
        self.limit = limit
        self.counts: dict[str, int] = {}
        self.first: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, label: str, exc: CallFailed) -> None:
        with self._lock:
            self.counts[label] = self.counts.get(label, 0) + 1
            self.first.setdefault(label, str(exc)[:300])
            if self.counts[label] > self.limit:
                raise BenchError(f"{label}: more than {self.limit} failed calls; first: {self.first[label]}")


# --------------------------------------------------------------------------- the client


class _Connection(http.client.HTTPConnection):
    """Keep-alive connection with TCP_NODELAY, also when http.client reconnects by itself."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _parse_sse(body: bytes) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
        payload = b"\n".join(data).strip()
        if payload:
            messages.append(json.loads(payload))
    return messages


class McpClient:
    """A minimal legacy-era Streamable HTTP client: one keep-alive connection, its own MCP session."""

    def __init__(self, url: str, token: str | None = None) -> None:
        parts = urlsplit(url)
        self.path = parts.path or "/"
        self.connection = _Connection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=HTTP_TIMEOUT)
        self.headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"
        self.ids = itertools.count(1)
        self.reconnects = 0
        self.session_id: str | None = None

    def close(self) -> None:
        self.connection.close()

    def _post(self, message: dict[str, Any]) -> tuple[int, http.client.HTTPResponse, bytes]:
        body = json.dumps(message, separators=(",", ":")).encode()
        for attempt in range(2):
            try:
                self.connection.request("POST", self.path, body=body, headers=self.headers)
                response = self.connection.getresponse()
                return response.status, response, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection (gunicorn's keep-alive is 2 s): reconnect.
                self.connection.close()
                if attempt:
                    raise
                self.reconnects += 1
        raise AssertionError("unreachable")

    def _reply(self, message: dict[str, Any]) -> tuple[http.client.HTTPResponse, dict[str, Any]]:
        status, response, raw = self._post(message)
        if status != 200:
            raise CallFailed(f"{message['method']} answered HTTP {status}: {raw[:300]!r}")
        content_type = (response.getheader("Content-Type") or "").lower()
        replies = _parse_sse(raw) if content_type.startswith("text/event-stream") else [json.loads(raw)]
        for reply in replies:
            if reply.get("id") == message["id"]:
                return response, reply
        raise BenchError(f"{message['method']}: no response with id {message['id']} in {raw[:300]!r}")

    def request(
        self, method: str, params: dict[str, Any] | None = None
    ) -> tuple[http.client.HTTPResponse, dict[str, Any]]:
        """One JSON-RPC request that must answer HTTP 200; the response and the reply message."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self.ids), "method": method}
        if params is not None:
            message["params"] = params
        return self._reply(message)

    def initialize(self) -> None:
        request = {
            "jsonrpc": "2.0",
            "id": next(self.ids),
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "aerostack-bench", "version": "0"},
            },
        }
        response, reply = self._reply(request)
        if "result" not in reply:
            raise BenchError(f"initialize failed: {reply}")
        self.session_id = response.getheader("Mcp-Session-Id")
        if self.session_id:
            self.headers["Mcp-Session-Id"] = self.session_id
        self.headers["MCP-Protocol-Version"] = str(reply["result"]["protocolVersion"])
        status, _, raw = self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if status != 202:
            raise BenchError(f"notifications/initialized answered HTTP {status}: {raw[:300]!r}")

    def call(self, name: str, arguments: dict[str, Any]) -> float:
        """One ``tools/call``; returns its latency in seconds after checking the result."""
        message = {
            "jsonrpc": "2.0",
            "id": next(self.ids),
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        }
        started = time.perf_counter()
        _, reply = self._reply(message)
        elapsed = time.perf_counter() - started
        result = reply.get("result")
        if not isinstance(result, dict) or result.get("isError"):
            raise CallFailed(f"tools/call {name} failed: {reply}")
        content = result.get("content") or [{}]
        if content[0].get("text") != EXPECTED_TEXT:
            raise CallFailed(f"tools/call {name} answered {content!r}, expected {EXPECTED_TEXT!r}")
        return elapsed


@dataclass
class Target:
    """One path to measure: where the client connects, with which token and tool name."""

    label: str
    url: str
    tool: str
    token: str | None = None

    def client(self) -> McpClient:
        client = McpClient(self.url, self.token)
        client.initialize()
        return client

    def __repr__(self) -> str:  # never shows the token
        return f"Target({self.label!r}, {self.url!r}, {self.tool!r})"


# --------------------------------------------------------------------------- figures


@dataclass
class Figure:
    path: str
    mode: str
    calls: int
    median_ms: float
    p99_ms: float
    requests_per_s: float
    failed: int = 0
    gateway_cpu_s_per_1000: float | None = None


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (seconds in, seconds out)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return ordered[rank - 1]


def figure(
    path: str, mode: str, latencies: list[float], wall: float, cpu: float | None, failed: int
) -> Figure:
    calls = len(latencies)
    if not calls:
        raise BenchError(f"{path} {mode}: every call failed")
    return Figure(
        path=path,
        mode=mode,
        calls=calls,
        median_ms=percentile(latencies, 0.5) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        requests_per_s=calls / wall if wall > 0 else 0.0,
        failed=failed,
        gateway_cpu_s_per_1000=None if cpu is None else cpu / (calls + failed) * 1000,
    )


class ProcessCpu:
    """user + system CPU seconds of one process (all its threads), read from /proc/<pid>/stat."""

    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, pid: int | None) -> None:
        self.pid = pid

    def seconds(self) -> float | None:
        if self.pid is None:
            return None
        try:
            with open(f"/proc/{self.pid}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        # Fields after "(comm)": state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
        return (int(fields[11]) + int(fields[12])) / self.ticks


def gunicorn_worker_pid(master: int, timeout: float = 10.0) -> int | None:
    """The (single) worker process of a gunicorn master, from /proc/<master>/task/*/children."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children: list[int] = []
        try:
            for task in os.listdir(f"/proc/{master}/task"):
                with open(f"/proc/{master}/task/{task}/children", encoding="ascii") as handle:
                    children.extend(int(pid) for pid in handle.read().split())
        except OSError:
            return None
        if children:
            return min(children)
        time.sleep(0.1)
    return None


def cpu_delta(cpu: ProcessCpu, before: float | None) -> float | None:
    after = cpu.seconds()
    return None if before is None or after is None else after - before


# --------------------------------------------------------------------------- phases


def timed_call(client: McpClient, target: Target, failures: Failures, label: str) -> float | None:
    """The latency of one call, or None when it failed (counted under ``label``)."""
    try:
        return client.call(target.tool, ARGUMENTS)
    except CallFailed as exc:
        failures.add(label, exc)
        return None


def warm_up(client: McpClient, target: Target, calls: int, failures: Failures) -> None:
    for _ in range(calls):
        timed_call(client, target, failures, f"{target.label} warm-up")


@dataclass
class Block:
    """One path's block of sequential calls in one round: its median and the CPU its server used."""

    median_s: float
    calls: int
    cpu_s: float | None = None  # of the server process behind the path, over this block (None: not read)


def sequential_alternating(
    pairs: list[tuple[Target, McpClient]],
    calls: int,
    block: int,
    failures: Failures,
    meters: dict[str, ProcessCpu] | None = None,
    rounds: list[dict[str, Block]] | None = None,
) -> dict[str, list[float]]:
    """``calls`` calls per path, in blocks of ``block`` that alternate between the paths (and their order).

    With ``rounds``, each round's blocks are recorded there (label -> ``Block``), with the CPU of the process
    in ``meters[label]`` read around that path's own block: the per-round pairs that ``paired`` compares."""
    latencies: dict[str, list[float]] = {target.label: [] for target, _ in pairs}
    meters = meters or {}
    done = 0
    for round_number in itertools.count():
        if done >= calls:
            break
        size = min(block, calls - done)
        order = pairs if round_number % 2 == 0 else list(reversed(pairs))
        this_round: dict[str, Block] = {}
        for target, client in order:
            bucket = latencies[target.label]
            label = f"{target.label} sequential"
            meter = meters.get(target.label)
            before = meter.seconds() if meter is not None else None
            values: list[float] = []
            for _ in range(size):
                latency = timed_call(client, target, failures, label)
                if latency is not None:
                    values.append(latency)
            cpu = cpu_delta(meter, before) if meter is not None else None
            bucket.extend(values)
            if values:
                this_round[target.label] = Block(percentile(values, 0.5), size, cpu)
        if rounds is not None:
            rounds.append(this_round)
        done += size
    return latencies


def _quartiles(values: list[float]) -> dict[str, float | int]:
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 4),
        "q1": round(percentile(ordered, 0.25), 4),
        "q3": round(percentile(ordered, 0.75), 4),
        "min": round(ordered[0], 4),
        "max": round(ordered[-1], 4),
        "rounds": len(ordered),
    }


def paired(rounds: list[dict[str, Block]], current: str, baseline: str) -> dict[str, Any]:
    """This checkout against the baseline, round by round (the same machine noise within a round).

    Per round: "gateway over floor" of each (its gateway's block median minus its own floor's), their ratio,
    the ratio of the whole gateway medians and of the gateway CPU per call; the median of each ratio over
    the rounds with its quartiles and extremes. The overall medians' comparison mixes calls from moments of
    different load; a ratio within one round does not."""
    over: list[float] = []
    over_current: list[float] = []
    over_baseline: list[float] = []
    whole: list[float] = []
    cpu: list[float] = []
    cpu_current = cpu_baseline = 0.0
    cpu_calls_current = cpu_calls_baseline = 0
    floor, floor_base = "floor", "floor@base"
    for blocks in rounds:
        if not all(label in blocks for label in (current, baseline, floor, floor_base)):
            continue
        mine = blocks[current].median_s - blocks[floor].median_s
        theirs = blocks[baseline].median_s - blocks[floor_base].median_s
        over_current.append(mine * 1000)
        over_baseline.append(theirs * 1000)
        if theirs > 0:
            over.append(mine / theirs)
        whole.append(blocks[current].median_s / blocks[baseline].median_s)
        spent, spent_base = blocks[current].cpu_s, blocks[baseline].cpu_s
        if spent is not None and spent_base is not None:
            cpu_current += spent
            cpu_baseline += spent_base
            cpu_calls_current += blocks[current].calls
            cpu_calls_baseline += blocks[baseline].calls
            if spent_base > 0:
                cpu.append((spent / blocks[current].calls) / (spent_base / blocks[baseline].calls))
    result: dict[str, Any] = {"rounds": len(over_current)}
    if over_current:
        result["gateway over floor, ms (per-round medians): this / baseline"] = [
            round(statistics.median(over_current), 3),
            round(statistics.median(over_baseline), 3),
        ]
    if over:
        result["gateway over floor ratio this / baseline (per round)"] = _quartiles(over)
    if whole:
        result["whole gateway median ratio this / baseline (per round)"] = _quartiles(whole)
    if cpu_calls_current and cpu_calls_baseline:
        result["gateway CPU ms per call (all rounds): this / baseline"] = [
            round(cpu_current / cpu_calls_current * 1000, 3),
            round(cpu_baseline / cpu_calls_baseline * 1000, 3),
        ]
    if cpu:
        result["gateway CPU per call ratio this / baseline (per round)"] = _quartiles(cpu)
    return result


def concurrent(
    target: Target, threads: int, per_thread: int, failures: Failures, label: str
) -> tuple[list[float], float]:
    """``threads`` threads, each with its own connection and MCP session, ``per_thread`` calls each."""
    clients: list[McpClient] = []
    try:
        for _ in range(threads):
            client = target.client()
            clients.append(client)
            warm_up(client, target, CONCURRENT_WARMUP, failures)
        results: list[list[float]] = [[] for _ in range(threads)]
        errors: list[BaseException] = []
        barrier = threading.Barrier(threads + 1, timeout=60)

        def run(client: McpClient, out: list[float]) -> None:
            try:
                barrier.wait()
                for _ in range(per_thread):
                    latency = timed_call(client, target, failures, label)
                    if latency is not None:
                        out.append(latency)
            except BaseException as exc:
                errors.append(exc)

        workers = [
            threading.Thread(target=run, args=(client, out), name=f"bench-{i}", daemon=True)
            for i, (client, out) in enumerate(zip(clients, results, strict=True))
        ]
        for worker in workers:
            worker.start()
        barrier.wait()
        started = time.perf_counter()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for worker in workers:
            worker.join(timeout=max(deadline - time.monotonic(), 0.1))
        wall = time.perf_counter() - started
        if any(worker.is_alive() for worker in workers):
            raise BenchError(f"{target.label}: concurrent calls did not finish within {JOIN_TIMEOUT:g}s")
        if errors:
            raise BenchError(f"{target.label}: {len(errors)} client threads failed: {errors[0]!r}")
        return [value for out in results for value in out], wall
    finally:
        for client in clients:
            client.close()


def pick_upstream(
    candidates: dict[str, RunningUpstream], warmup: int, failures: Failures
) -> tuple[str, dict[str, float]]:
    """The mode whose direct median is the lowest, measured alternately on the same machine noise."""
    pairs: list[tuple[Target, McpClient]] = []
    try:
        for mode, upstream in candidates.items():
            target = Target(mode, upstream.url, TOOL)
            client = target.client()
            pairs.append((target, client))
            warm_up(client, target, warmup, failures)
        latencies = sequential_alternating(pairs, MODE_PROBE_CALLS, MODE_PROBE_BLOCK, failures)
    finally:
        for _, client in pairs:
            client.close()
    medians = {mode: percentile(values, 0.5) * 1000 for mode, values in latencies.items()}
    return min(medians, key=lambda mode: medians[mode]), medians


# --------------------------------------------------------------------------- the live gateway

SETUP_CODE = """
import json
from django.conf import settings
from django.contrib.auth.models import User
from gateway.services import server_create
from tokens.services import token_create
from workspaces.models import Member, Workspace
from workspaces.services import workspace_create

user = User.objects.create_user(username="bench@example.com", email="bench@example.com")
workspace = workspace_create(name="Bench", owner=user)
Workspace.objects.filter(pk=workspace.pk).update(rate_limit_per_minute={rate})
workspace.refresh_from_db()
server = server_create(
    workspace=workspace, actor=user, name="Python SDK upstream", slug={slug}, url={url}, timeout_seconds=30
)
member = Member.objects.get(workspace=workspace, user=user)
created = token_create(workspace=workspace, holder=member, name="bench", expires_in=None, created_by=user)
# The same holder with an allow-list (this server, two of its tools): the scoped path of the bench. A
# baseline checkout from before scopes (issue 8) has no such token; the bench uses only its first token.
import inspect
scoped = token_create(
    workspace=workspace, holder=member, name="bench scoped", expires_in=None, created_by=user,
    scopes={{server.pk: ["add", "echo"]}},
) if "scopes" in inspect.signature(token_create).parameters else None
print({marker} + json.dumps({{
    "token": created.raw,
    "scoped_token": scoped.raw if scoped is not None else None,
    "workspace": workspace.slug,
    "server": server.slug,
    "rate_limit_per_minute": workspace.rate_limit_per_minute,
    "database": settings.DATABASES["default"]["ENGINE"],
    "cache": settings.CACHES["default"]["BACKEND"],
    "usage_async": settings.GATEWAY_USAGE_ASYNC,
}}))
"""


@contextlib.contextmanager
def server_process(argv: list[str], cwd: Path, env: dict[str, str], log: Path, port: int) -> Iterator[int]:
    """A server process on 127.0.0.1:``port``, stopped at the end; yields its pid."""
    with log.open("ab") as log_file:
        process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            argv, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, process, log)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _gunicorn(target: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gunicorn", target, "--bind", f"127.0.0.1:{port}", "--workers", "1", *extra]


def serves_asgi(root: Path) -> bool:
    """Whether the checkout's ``make run`` serves the ASGI application (the event-loop model)."""
    makefile = root / "Makefile"
    return makefile.exists() and "aerostack.asgi:application" in makefile.read_text()


@contextlib.contextmanager
def floor_server(
    upstream_url: str, log_dir: str, root: Path = ROOT, *, baseline: bool = False
) -> Iterator[str]:
    """``benchmarks/floor_site.py`` served the way Aerostack is (``root``'s gunicorn.conf.py); yields its URL.

    ``baseline``: a checkout from before the event-loop front, whose floor was a WSGI app with 8 threads. Its
    floor is this checkout's ``floor_site.py`` (a copy, importable under its own name, in ``log_dir``), served
    the baseline's way from the baseline's folder: both floors do the same forwarding work (the same retry of
    a stale keep-alive connection), only the serving differs, as it does between the two gateways.
    """
    port = free_port()
    log = Path(log_dir) / f"floor{'-baseline' if baseline else ''}.log"
    if baseline and serves_asgi(root):  # a checkout of the event-loop model: the floor is served as ours
        root, baseline = ROOT, False
    settings_module = "benchmarks.floor_site"
    extra: dict[str, str] = {}
    if baseline:
        copy_dir = Path(log_dir) / "floor-code"
        copy_dir.mkdir(exist_ok=True)
        settings_module = "aerostack_bench_floor"
        (copy_dir / f"{settings_module}.py").write_text((ROOT / "benchmarks" / "floor_site.py").read_text())
        extra["PYTHONPATH"] = str(copy_dir)
    env = server_env(Path(log_dir), {"DJANGO_SETTINGS_MODULE": settings_module, **extra})
    env["BENCH_UPSTREAM_URL"] = upstream_url
    if baseline:
        argv = _gunicorn("django.core.wsgi:get_wsgi_application()", port, "--threads", "8")
    else:
        argv = _gunicorn("benchmarks.floor_asgi:application", port)
    with server_process([*argv, "--access-logfile", "-"], root, env, log, port):
        yield f"http://127.0.0.1:{port}/mcp"


@contextlib.contextmanager
def proxy_server(upstream_url: str, log_dir: str) -> Iterator[str]:
    """``benchmarks/proxy.py``: the physical floor of one extra hop; yields its URL (the upstream's path)."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.proxy", str(port), upstream_url]
    with server_process(argv, ROOT, server_env(Path(log_dir)), Path(log_dir) / "proxy.log", port):
        yield f"http://127.0.0.1:{port}{urlsplit(upstream_url).path}"


@contextlib.contextmanager
def checkout_server(root: Path, log_dir: str, extra_env: dict[str, str]) -> Iterator[tuple[LiveServer, int]]:
    """Aerostack from another checkout (e.g. main before this change), as ITS ``make run`` served it
    (``aerostack.asgi:application``, or before the event-loop model ``aerostack.wsgi:application`` with 8
    threads; its gunicorn.conf.py), with its own SQLite data folder.
    Yields the server (whose ``manage()`` runs that checkout's manage.py) and the gunicorn master's pid."""
    data_dir = Path(log_dir) / f"checkout-{free_port()}"
    data_dir.mkdir()
    for name in ("DATABASE_URL", "REDIS_URL"):
        if os.environ.get(name):
            raise BenchError("a baseline checkout runs the embedded default: unset DATABASE_URL/REDIS_URL")
    env = server_env(data_dir, extra_env)
    env["SECRET_KEY"] = os.urandom(32).hex()
    port = free_port()
    server = LiveServer(
        url=f"http://127.0.0.1:{port}", port=port, data_dir=data_dir, log=data_dir / "server.log", env=env
    )

    def manage(*args: str) -> str:
        done = subprocess.run(  # noqa: S603
            [sys.executable, str(root / "manage.py"), *args],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise BenchError(f"baseline manage.py {args[0]} failed: {done.stderr[-2000:]}")
        return done.stdout

    manage("migrate", "--noinput")
    server.manage = manage  # type: ignore[method-assign]
    # What that checkout's `make run` serves: the ASGI application (its gunicorn.conf.py names the worker
    # class) since the event-loop model, the WSGI one with 8 threads before it (6792a47).
    if serves_asgi(root):
        argv = _gunicorn("aerostack.asgi:application", server.port, "--access-logfile", "-")
    else:
        argv = _gunicorn("aerostack.wsgi:application", server.port, "--threads", "8", "--access-logfile", "-")
    with server_process(argv, root, env, server.log, server.port) as pid:
        yield server, pid


@contextlib.contextmanager
def baseline_gateway(root: Path, upstream_url: str, log_dir: str) -> Iterator[tuple[str, str, int]]:
    """The gateway of another checkout (``checkout_server``), provisioned: its URL, token and master pid."""
    env = {"ALLOW_PRIVATE_UPSTREAMS": "true", "GATEWAY_RATE_LIMIT": str(RATE_LIMIT)}
    with checkout_server(root, log_dir, env) as (server, pid):
        setup = provision(server, upstream_url)
        yield f"{server.url}/ws/{setup['workspace']}", str(setup["token"]), pid


def provision(server: LiveServer, upstream_url: str) -> dict[str, Any]:
    """User, workspace, server and token in the live server's database; the token only in memory."""
    code = SETUP_CODE.format(
        rate=RATE_LIMIT,
        slug=json.dumps(SERVER_SLUG),
        url=json.dumps(upstream_url),
        marker=json.dumps(SETUP_MARKER),
    )
    output = server.manage("shell", "-c", code)
    for line in output.splitlines():
        if line.startswith(SETUP_MARKER):
            return dict(json.loads(line[len(SETUP_MARKER) :]))
    raise BenchError("the setup snippet printed no result")  # its output may hold the token: not shown


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(results: dict[str, Any], figures: list[Figure], emit: Callable[[str], None] = print) -> None:
    env = results["environment"]
    emit("")
    emit("Aerostack gateway benchmark: tools/call add(a=1, b=2), keep-alive http.client, 127.0.0.1")
    emit(
        f"  database {env['database']}, cache {env['cache']}, usage log async={env['usage_async']}, "
        "one gunicorn process (gunicorn.conf.py's worker class)"
    )
    emit(
        f"  python {env['python']}, {env['cpus']} CPUs; upstream: Python SDK, {env['upstream_mode']} "
        f"(direct medians while choosing: "
        + ", ".join(f"{mode} {ms:.3f} ms" for mode, ms in env["upstream_probe_ms"].items())
        + ")"
    )
    emit("")
    header = (
        f"{'path':<8} {'mode':<15} {'calls':>6} {'median ms':>10} {'p99 ms':>8} "
        f"{'req/s':>8} {'failed':>6} {'gw CPU s/1000':>14}"
    )
    emit(header)
    emit("-" * len(header))
    for item in figures:
        emit(
            f"{item.path:<8} {item.mode:<15} {item.calls:>6} {item.median_ms:>10.3f} {item.p99_ms:>8.3f} "
            f"{item.requests_per_s:>8.1f} {item.failed:>6} {_fmt(item.gateway_cpu_s_per_1000):>14}"
        )
    emit("")
    added = results["added"]
    for mode, values in added.items():
        emit(
            f"added by the gateway ({mode}): median {values['median_ms']:+.3f} ms, "
            f"p99 {values['p99_ms']:+.3f} ms"
        )
    for name, values in results.get("floor", {}).items():
        emit(f"{name} (sequential): median {values['median_ms']:+.3f} ms, p99 {values['p99_ms']:+.3f} ms")
    for path, ratios in results.get("ratios", {}).items():
        for name, value in ratios.items():
            emit(f"{path}: {name} = {value}")
    for name, target in results["targets"].items():
        emit(
            f"target {name}: {target['value_ms']:+.3f} ms <= {target['limit_ms']:g} ms  "
            f"{'PASS' if target['pass'] else 'MISS'}"
        )
    for label, count in results["failures"]["counts"].items():
        emit(f"FAILED calls ({label}): {count}, first: {results['failures']['first'][label]}")
    if results.get("reconnects"):
        emit(f"client reconnects (idle keep-alive closed by a server): {results['reconnects']}")
    comparison = results.get("paired")
    if comparison:
        emit("")
        emit(
            f"this checkout against the baseline ({results.get('baseline', 'baseline')}), "
            f"round by round ({comparison['rounds']} rounds; a ratio below 1 is this checkout doing better):"
        )
        for name, value in comparison.items():
            if name == "rounds":
                continue
            if isinstance(value, dict):
                emit(
                    f"  {name}: median {value['median']:.3f} (quartiles {value['q1']:.3f}-{value['q3']:.3f}, "
                    f"min {value['min']:.3f}, max {value['max']:.3f})"
                )
            else:
                emit(f"  {name}: {value[0]:.3f} / {value[1]:.3f}")


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    figures: list[Figure] = []
    with contextlib.ExitStack() as stack:
        print("starting the Python SDK upstream (stateful JSON and stateful SSE)...", flush=True)
        candidates: dict[str, RunningUpstream] = {}
        for mode, extra in (("stateful+json", ("--json-response",)), ("stateful+sse", ())):
            upstream = start_python_upstream(*extra)
            stack.callback(upstream.stop)
            candidates[mode] = upstream
        failures = Failures()
        mode, probe = pick_upstream(candidates, args.warmup, failures)
        for other, upstream in candidates.items():
            if other != mode:
                upstream.stop()
        upstream = candidates[mode]
        print(f"upstream mode for both paths: {mode} ({upstream.url})", flush=True)

        print("starting Aerostack under gunicorn...", flush=True)
        server = stack.enter_context(
            live_server(
                workers=1,
                extra_env={"ALLOW_PRIVATE_UPSTREAMS": "true", "GATEWAY_RATE_LIMIT": str(RATE_LIMIT)},
            )
        )
        setup = provision(server, upstream.url)
        token = str(setup.pop("token"))
        scoped_token = str(setup.pop("scoped_token"))
        print("starting the framework floor (a bare DRF forwarding view, same gunicorn setup)...", flush=True)
        floor = Target("floor", stack.enter_context(floor_server(upstream.url, str(server.data_dir))), TOOL)
        direct = Target("direct", upstream.url, TOOL)
        proxy = Target("proxy", stack.enter_context(proxy_server(upstream.url, str(server.data_dir))), TOOL)
        gateway = Target(
            "gateway", f"{server.url}/ws/{setup['workspace']}", f"{setup['server']}__{TOOL}", token
        )
        # The same gateway path with a scoped token (server + tool allow-list), alternated with the others.
        scoped = Target(
            "scoped", f"{server.url}/ws/{setup['workspace']}", f"{setup['server']}__{TOOL}", scoped_token
        )
        gateway_tool = f"{setup['server']}__{TOOL}"
        baseline: list[Target] = []
        baseline_cpu = ProcessCpu(None)
        if args.baseline_root is not None:
            results["baseline"] = args.baseline or str(args.baseline_root)
            print(f"starting the baseline gateway and floor from {args.baseline_root}...", flush=True)
            root = Path(args.baseline_root).resolve()
            url, base_token, base_master = stack.enter_context(
                baseline_gateway(root, upstream.url, str(server.data_dir))
            )
            base_floor = stack.enter_context(
                floor_server(upstream.url, str(server.data_dir), root, baseline=True)
            )
            baseline = [
                Target("floor@base", base_floor, TOOL),
                Target("gateway@base", url, gateway_tool, base_token),
            ]
            baseline_cpu = ProcessCpu(gunicorn_worker_pid(base_master))
        results["environment"] = {
            "database": setup["database"],
            "cache": setup["cache"],
            "usage_async": setup["usage_async"],
            "rate_limit_per_minute": setup["rate_limit_per_minute"],
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "upstream_mode": mode,
            "upstream_probe_ms": {key: round(value, 3) for key, value in probe.items()},
            "database_url_set": bool(os.environ.get("DATABASE_URL")),
            "redis_url_set": bool(os.environ.get("REDIS_URL")),
        }
        cpu = ProcessCpu(gunicorn_worker_pid(server.processes[0].pid))
        results["gateway_worker_cpu_readable"] = cpu.seconds() is not None

        # Within a round the two gateways run back to back, each floor on its outer side (the order is
        # reversed every other round): floor, gateway, gateway@base, floor@base, then the other way round.
        paths = [direct, proxy, scoped, floor, gateway, *reversed(baseline)]
        pairs = [(target, target.client()) for target in paths]
        for _, client in pairs:
            stack.callback(client.close)
        print(f"warm-up: {args.warmup} calls per path...", flush=True)
        for target, client in pairs:
            warm_up(client, target, args.warmup, failures)

        print(f"sequential: {args.calls} calls per path, alternating blocks of {args.block}...", flush=True)
        # Each gateway path's CPU is read around its own blocks (one worker serves both of this checkout's).
        meters = {"gateway": cpu, "scoped": cpu, "gateway@base": baseline_cpu}
        rounds: list[dict[str, Block]] = []
        sequential = sequential_alternating(pairs, args.calls, args.block, failures, meters, rounds)
        cpu_used: dict[str, float | None] = {}
        for label in meters:
            spent = [blocks[label].cpu_s for blocks in rounds if label in blocks]
            cpu_used[label] = None if not spent or None in spent else sum(s for s in spent if s is not None)
        if baseline:
            results["paired"] = paired(rounds, "gateway", "gateway@base")
        results["rounds"] = [
            {label: [round(b.median_s * 1000, 4), b.calls, b.cpu_s] for label, b in blocks.items()}
            for blocks in rounds
        ]
        for target, _ in pairs:
            values = sequential[target.label]
            figures.append(
                figure(
                    target.label,
                    "sequential",
                    values,
                    sum(values),
                    cpu_used.get(target.label),
                    failures.counts.get(f"{target.label} sequential", 0),
                )
            )

        mode_label = f"concurrent-{args.concurrency}"
        print(f"{mode_label}: {args.concurrency} threads x {args.per_thread} calls per path...", flush=True)
        for target in (direct, proxy, gateway, *baseline[1:]):
            meter = {"gateway": cpu, "gateway@base": baseline_cpu}.get(target.label)
            before = meter.seconds() if meter else None
            label = f"{target.label} {mode_label}"
            values, wall = concurrent(target, args.concurrency, args.per_thread, failures, label)
            used = cpu_delta(meter, before) if meter else None
            figures.append(
                figure(target.label, mode_label, values, wall, used, failures.counts.get(label, 0))
            )

        results["reconnects"] = sum(client.reconnects for _, client in pairs)
        results["failures"] = {"counts": dict(failures.counts), "first": dict(failures.first)}

    by_key = {(item.path, item.mode): item for item in figures}
    added: dict[str, dict[str, float]] = {}
    for label in ("sequential", mode_label):
        added[label] = _difference(by_key[("gateway", label)], by_key[("direct", label)])
    seq = added["sequential"]
    results["floor"] = {
        "proxy over direct": _difference(by_key[("proxy", "sequential")], by_key[("direct", "sequential")]),
        "floor over direct": _difference(by_key[("floor", "sequential")], by_key[("direct", "sequential")]),
        "gateway over floor": _difference(by_key[("gateway", "sequential")], by_key[("floor", "sequential")]),
        "scoped token over unscoped": _difference(
            by_key[("scoped", "sequential")], by_key[("gateway", "sequential")]
        ),
    }
    scope_cost = results["floor"]["scoped token over unscoped"]
    results["ratios"] = {}
    for suffix in ("", "@base"):
        if ("gateway" + suffix, "sequential") not in by_key:
            continue
        gateway_figure = by_key[("gateway" + suffix, "sequential")]
        direct_figure, proxy_figure = by_key[("direct", "sequential")], by_key[("proxy", "sequential")]
        if suffix:
            results["floor"]["gateway over floor (baseline)"] = _difference(
                gateway_figure, by_key[("floor@base", "sequential")]
            )
        proxy_added = proxy_figure.median_ms - direct_figure.median_ms
        results["ratios"]["gateway" + suffix] = {
            "gateway added / proxy added (sequential medians)": round(
                (gateway_figure.median_ms - direct_figure.median_ms) / proxy_added, 2
            )
            if proxy_added > 0
            else None,
            f"gateway / direct throughput ({mode_label})": round(
                by_key[("gateway" + suffix, mode_label)].requests_per_s
                / by_key[("direct", mode_label)].requests_per_s,
                3,
            ),
        }
    results["figures"] = [
        {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(item).items()} for item in figures
    ]
    results["added"] = added
    results["targets"] = {
        "added median (sequential)": {
            "value_ms": seq["median_ms"],
            "limit_ms": TARGET_ADDED_MEDIAN_MS,
            "pass": seq["median_ms"] <= TARGET_ADDED_MEDIAN_MS,
        },
        "added p99 (sequential)": {
            "value_ms": seq["p99_ms"],
            "limit_ms": TARGET_ADDED_P99_MS,
            "pass": seq["p99_ms"] <= TARGET_ADDED_P99_MS,
        },
        "scoped token over unscoped, median (sequential)": {
            "value_ms": scope_cost["median_ms"],
            "limit_ms": TARGET_SCOPED_MEDIAN_MS,
            "pass": scope_cost["median_ms"] <= TARGET_SCOPED_MEDIAN_MS,
        },
    }
    report(results, figures)
    return results


def _difference(slower: Figure, faster: Figure) -> dict[str, float]:
    return {
        "median_ms": round(slower.median_ms - faster.median_ms, 3),
        "p99_ms": round(slower.p99_ms - faster.p99_ms, 3),
    }


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gateway",
        description="Latency the Aerostack gateway adds to a tools/call, against the same upstream directly.",
    )
    parser.add_argument("--calls", type=positive, default=1000, help="sequential calls per path (1000)")
    parser.add_argument("--concurrency", type=positive, default=16, help="client threads (16)")
    parser.add_argument("--per-thread", type=positive, default=100, help="calls per client thread (100)")
    parser.add_argument("--warmup", type=positive, default=100, help="warm-up calls per path (100)")
    parser.add_argument("--block", type=positive, default=50, help="sequential calls per alternation block")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    parser.add_argument(
        "--baseline-root",
        default=None,
        help="a checkout of an earlier commit (a git worktree): its gateway and floor are measured too, "
        "as its own `make run` served them, in the same alternating blocks",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="COMMIT",
        help="as --baseline-root, with a detached git worktree of COMMIT made (or reused) in the system's "
        "temporary folder, e.g. --baseline 6792a47",
    )
    args = parser.parse_args(argv)
    if args.baseline and args.baseline_root:
        parser.error("give --baseline or --baseline-root, not both")
    return args


def baseline_checkout(commit: str) -> Path:
    """A detached ``git worktree`` of ``commit`` (made once, then reused), for ``--baseline``."""

    def git(*args: str) -> str:
        done = subprocess.run(  # noqa: S603
            ["git", "-C", str(ROOT), *args],  # noqa: S607
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise BenchError(f"git {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
        return done.stdout.strip()

    sha = git("rev-parse", "--verify", f"{commit}^{{commit}}")
    # A worktree already checked out at that commit (e.g. /tmp/base-6792a47, made by hand) is reused.
    checkout: str | None = None
    for line in git("worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            checkout = line[len("worktree ") :]
        elif line == f"HEAD {sha}" and checkout and Path(checkout).resolve() != ROOT.resolve():
            return Path(checkout)
    path = Path(tempfile.gettempdir()) / f"aerostack-base-{sha[:12]}"
    if path.exists():
        raise BenchError(f"{path} exists and is not a worktree of {sha[:12]}: remove it")
    git("worktree", "add", "--detach", str(path), sha)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline:
        args.baseline_root = str(baseline_checkout(args.baseline))
        print(f"baseline {args.baseline}: {args.baseline_root}", flush=True)
    results = run(args)
    if args.json:
        print(json.dumps(results, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
