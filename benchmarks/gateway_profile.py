"""Aerostack's own work per ``tools/call``, in process, without any server: for profilers and instruction
counters, whose figures do not depend on how busy the machine is (``make bench``'s timings do).

    python benchmarks/gateway_profile.py setup --root ROOT --data-dir DIR --upstream-url URL
    python benchmarks/gateway_profile.py run --root ROOT --data-dir DIR [--calls N] [--warmup W]
        [--cprofile FILE] [--count-round-trips]

``setup`` migrates a scratch database in DIR (SQLite, or ``DATABASE_URL``) and creates, through the services,
what ``make bench`` creates: a user, a workspace, a server for ``URL`` and a token (kept in DIR/bench.json).
``run`` loads ROOT's Django project (``ROOT`` may be another checkout, e.g. a ``git worktree`` of 6792a47:
its code is imported, this interpreter's packages used) and calls its WSGI application directly, in this
thread, with one MCP session: ``initialize``, then W + N ``tools/call add(1, 2)`` against the real upstream.
It prints the per-call wall and process CPU time of the N calls, and optionally writes a cProfile of them or
counts the database queries and cache operations per call. Under ``valgrind --tool=callgrind`` two runs with
different N give the instructions per call (their difference over the difference of N): what the machine's
load cannot change. Nothing listens on a port here; only the upstream runs in another process.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ACCEPT = "application/json, text/event-stream"
PROTOCOL_VERSION = "2025-11-25"
RATE_LIMIT = 1_000_000


def _load(root: Path, data_dir: Path) -> None:
    """Import ``root``'s project (before this checkout's) with its data in ``data_dir``."""
    os.chdir(root)
    sys.path.insert(0, str(root))
    os.environ["AEROSTACK_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("ALLOW_PRIVATE_UPSTREAMS", "true")
    os.environ.setdefault("GATEWAY_RATE_LIMIT", str(RATE_LIMIT))
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["DJANGO_SETTINGS_MODULE"] = "aerostack.settings"


def setup(args: argparse.Namespace) -> None:
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    _load(Path(args.root).resolve(), data_dir)
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)
    from gateway.services import server_create
    from tokens.services import token_create
    from workspaces.models import Member, Workspace
    from workspaces.services import workspace_create

    user = User.objects.create_user(username="bench@example.com", email="bench@example.com")
    workspace = workspace_create(name="Bench", owner=user)
    Workspace.objects.filter(pk=workspace.pk).update(rate_limit_per_minute=RATE_LIMIT)
    server = server_create(
        workspace=workspace, actor=user, name="Upstream", slug="py", url=args.upstream_url, timeout_seconds=30
    )
    member = Member.objects.get(workspace=workspace, user=user)
    created = token_create(workspace=workspace, holder=member, name="bench", expires_in=None, created_by=user)
    (data_dir / "bench.json").write_text(
        json.dumps({"token": created.raw, "workspace": workspace.slug, "server": server.slug})
    )
    os.chmod(data_dir / "bench.json", 0o600)


class _Gateway:
    """The project's WSGI application called directly, as a server's thread would call it."""

    def __init__(self, slug: str, token: str) -> None:
        from aerostack.wsgi import application

        self.app = application
        self.path = f"/ws/{slug}"
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_ACCEPT": ACCEPT}
        self.ids = 0

    def post(self, message: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
        body = json.dumps(message, separators=(",", ":")).encode()
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": self.path,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": "40000",
            "HTTP_HOST": "127.0.0.1:8000",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            **self.headers,
        }
        captured: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, dict(headers)]
            return None

        result = self.app(environ, start_response)
        try:
            content = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return captured[0], captured[1], content

    def request(self, method: str, params: dict[str, Any] | None = None) -> tuple[dict[str, str], Any]:
        self.ids += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self.ids, "method": method}
        if params is not None:
            message["params"] = params
        status, headers, content = self.post(message)
        if not status.startswith("200"):
            raise SystemExit(f"{method}: {status} {content[:300]!r}")
        if headers.get("Content-Type", "").startswith("text/event-stream"):
            data = [line[5:] for line in content.split(b"\n") if line.startswith(b"data:")]
            return headers, json.loads(data[-1])
        return headers, json.loads(content)

    def initialize(self) -> None:
        headers, reply = self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "aerostack-profile", "version": "0"},
            },
        )
        self.headers["HTTP_MCP_SESSION_ID"] = headers["Mcp-Session-Id"]
        self.headers["HTTP_MCP_PROTOCOL_VERSION"] = str(reply["result"]["protocolVersion"])
        status, _, content = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if not status.startswith("202"):
            raise SystemExit(f"notifications/initialized: {status} {content[:300]!r}")

    def call(self) -> None:
        _, reply = self.request("tools/call", {"name": "py__add", "arguments": {"a": 1, "b": 2}})
        content = (reply.get("result") or {}).get("content") or [{}]
        if content[0].get("text") != "3":
            raise SystemExit(f"tools/call answered {reply!r}")


class _RoundTrips:
    """Database queries and cache operations, counted by wrapping the backends' entry points."""

    CACHE_METHODS = (
        "get",
        "get_many",
        "set",
        "set_many",
        "add",
        "incr",
        "delete",
        "delete_many",
        "hit_window",
        "read_and_count",
        "lease_acquire",
        "lease_release",
    )

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def install(self) -> None:
        from django.core.cache import caches
        from django.db import connection

        backend = caches["default"]  # this thread's backend: the calls are made in this thread
        for name in self.CACHE_METHODS:
            method = getattr(backend, name, None)
            if method is not None:
                setattr(backend, name, self._counting(f"cache.{name}", method))

        def execute_wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            self.counts[f"db.{sql.split(None, 1)[0].upper()}"] += 1
            return execute(sql, params, many, context)

        connection.execute_wrappers.append(execute_wrapper)
        if connection.vendor == "sqlite":
            # Statements sent to the DB-API connection itself (the prepared token lookup) are seen here.
            connection.ensure_connection()
            counts = self.counts
            connection.connection.set_trace_callback(
                lambda sql: counts.update([f"sqlite.{sql.split(None, 1)[0].upper()}"])
            )

    def _counting(self, label: str, method: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[label] += 1
            return method(*args, **kwargs)

        return counted


def _trace_opcodes(counts: Counter[str]) -> None:
    """Count every bytecode this thread executes, by function: deterministic, unlike any timing."""

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "opcode":
            code = frame.f_code
            counts[f"{code.co_filename}:{code.co_firstlineno}:{code.co_name}"] += 1
        return local

    def new_frame(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        return local

    sys.settrace(new_frame)


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread of this process so far, by thread name."""
    import threading

    spent: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            clock = time.pthread_getcpuclockid(thread.ident)
            spent[thread.name] = spent.get(thread.name, 0.0) + time.clock_gettime(clock)
        except (OSError, ProcessLookupError):  # ended meanwhile
            continue
    return spent


def run(args: argparse.Namespace) -> None:
    data_dir = Path(args.data_dir).resolve()
    setup_data = json.loads((data_dir / "bench.json").read_text())
    profile_path = Path(args.cprofile).resolve() if args.cprofile else None
    opcodes_path = Path(args.count_opcodes).resolve() if args.count_opcodes else None
    _load(Path(args.root).resolve(), data_dir)
    import django

    django.setup()
    gateway = _Gateway(setup_data["workspace"], setup_data["token"])
    gateway.initialize()
    for _ in range(args.warmup):
        gateway.call()
    # Under a profiler a call takes longer than the 50 ms after which the gateway registers it for
    # cancellation (a cache write and delete); at full speed no call of this bench is registered.
    from gateway import upstream

    upstream.SLOW_SECONDS = 3600  # 6792a47 polled for it
    if hasattr(upstream, "SLOW_WATCH"):  # since then a watchdog thread
        upstream.SLOW_WATCH.seconds = 3600
    if not args.write_usage:
        # The usage writer (gateway/usage.py, the same code in every tree since 6792a47) flushes every
        # 0.25 s, and each flush makes the next call read its token again (PRAGMA data_version): how often
        # depends on how fast the calls run, i.e. on the profiler. Held, every measured call does the same.
        from gateway import usage

        usage.FLUSH_INTERVAL_SECONDS = 3600
        time.sleep(0.6)  # the warm-up's rows are written now, and the writer waits for the next batch
    counter = _RoundTrips() if args.count_round_trips else None
    if counter is not None:
        counter.install()
    profiler = None
    if profile_path is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    opcodes: Counter[str] = Counter()
    if opcodes_path is not None:
        _trace_opcodes(opcodes)
    threads_before = _thread_cpu()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.calls):
        gateway.call()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    threads = _thread_cpu()
    if not args.write_usage:
        # Since 6792a47 the rows still queued are written at exit (gateway.usage's atexit flush): that would
        # put the measured calls' usage writes into a whole-process count (callgrind, strace) of one tree
        # and not of the other. Held rows are dropped, in every tree alike.
        from gateway import usage

        pending = getattr(getattr(usage, "_writer", None), "queue", None)
        while pending is not None and not pending.empty():
            pending.get_nowait()
    if opcodes_path is not None:
        sys.settrace(None)
        per_call = {name: count / args.calls for name, count in opcodes.most_common()}
        opcodes_path.write_text(json.dumps(per_call, indent=0))
        print(f"  {sum(opcodes.values()) / args.calls:.1f} bytecodes per call (this thread)")
    if profiler is not None and profile_path is not None:
        profiler.disable()
        profiler.dump_stats(profile_path)
    print(
        f"{args.root}: {args.calls} calls, {wall / args.calls * 1e6:.1f} µs wall and"
        f" {cpu / args.calls * 1e6:.1f} µs CPU (this process, all threads) per call"
    )
    for name, seconds in sorted(threads.items()):
        spent = seconds - threads_before.get(name, 0.0)
        if spent * 1e6 / args.calls >= 1:
            print(f"  thread {name}: {spent / args.calls * 1e6:.1f} µs CPU per call")
    if counter is not None:
        for label, count in sorted(counter.counts.items()):
            print(f"  {label}: {count / args.calls:.2f} per call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    first = commands.add_parser("setup")
    first.add_argument("--root", required=True)
    first.add_argument("--data-dir", required=True)
    first.add_argument("--upstream-url", required=True)
    second = commands.add_parser("run")
    second.add_argument("--root", required=True)
    second.add_argument("--data-dir", required=True)
    second.add_argument("--calls", type=int, default=1000)
    second.add_argument("--warmup", type=int, default=100)
    second.add_argument("--cprofile")
    second.add_argument(
        "--write-usage", action="store_true", help="let the usage writer flush during the measured calls"
    )
    second.add_argument("--count-round-trips", action="store_true")
    second.add_argument(
        "--count-opcodes",
        help="write the bytecodes executed per call and function (in this thread) to this JSON file",
    )
    args = parser.parse_args()
    setup(args) if args.command == "setup" else run(args)


if __name__ == "__main__":
    main()
