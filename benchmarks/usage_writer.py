"""The usage writer's own CPU per row (``gateway.usage._Writer.write``), in process, without any server.

    python -m benchmarks.usage_writer --data-dir DIR [--root ROOT] [--batches 1,10,40,250] [--rows 1000]
        [--cprofile FILE] [--callgrind]

Migrates a scratch database in DIR (SQLite, or ``DATABASE_URL``: PostgreSQL), creates a workspace, a server
and a token through the services, and writes batches of usage rows like the sequential ``make bench``'s
(one token, one tool, ``ok``, a few ms each, 7 ms apart: the rollup keys conflict as they do under load)
with ``_Writer().write(rows)`` in this thread, each followed by ``release_connection()`` as the writer thread
does. For every batch size it prints the median thread CPU time (``time.thread_time``: this thread only,
the database's own C code included, a PostgreSQL server's work not) per batch and per row over about
``--rows`` rows. The bench's rows are deleted first, so every run starts from the same state.

``--callgrind`` runs the same under ``valgrind --tool=callgrind`` with instrumentation on only around the
writes (a small C helper, compiled with ``cc``, sends callgrind's client requests) and prints instructions
per batch and per row: figures the machine's load cannot change. ``--cprofile`` writes a cProfile of the
writes. ``ROOT`` may be another checkout (e.g. a ``git worktree`` of 6792a47): its code is imported.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BASE = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
GAP = timedelta(milliseconds=7)  # one sequential call of the bench

_HELPER_C = r"""
#include <valgrind/callgrind.h>
void start(void) { CALLGRIND_START_INSTRUMENTATION; }
void stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
void zero(void) { CALLGRIND_ZERO_STATS; }
void dump(const char *label) { CALLGRIND_DUMP_STATS_AT(label); }
"""


def _load(root: Path, data_dir: Path) -> None:
    os.chdir(root)
    sys.path.insert(0, str(root))
    os.environ["AEROSTACK_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("ALLOW_PRIVATE_UPSTREAMS", "true")
    os.environ["DJANGO_SETTINGS_MODULE"] = "aerostack.settings"
    import django

    django.setup()


def _prepare(data_dir: Path) -> dict[str, int]:
    """Migrate and create the references once (kept in DIR/usage_writer.json); delete earlier bench rows."""
    from django.core.management import call_command

    from gateway.models import UsageEvent

    marker = data_dir / "usage_writer.json"
    call_command("migrate", "--noinput", verbosity=0)
    from workspaces.models import Workspace

    ids: dict[str, int] | None = json.loads(marker.read_text()) if marker.exists() else None
    if ids is None or not Workspace.objects.filter(pk=ids["workspace_id"]).exists():
        from django.contrib.auth.models import User

        from gateway.services import server_create
        from tokens.services import token_create
        from workspaces.models import Member
        from workspaces.services import workspace_create

        user = User.objects.create_user(username=f"writer-{time.time_ns()}@example.com")
        workspace = workspace_create(name="Writer bench", owner=user)
        server = server_create(
            workspace=workspace, actor=user, name="Upstream", slug="py", url="http://127.0.0.1:9/mcp"
        )
        member = Member.objects.get(workspace=workspace, user=user)
        token = token_create(
            workspace=workspace, holder=member, name="bench", expires_in=None, created_by=user
        )
        ids = {
            "workspace_id": workspace.pk,
            "member_id": member.pk,
            "token_id": token.token.pk,
            "server_id": server.pk,
        }
        marker.write_text(json.dumps(ids))
    UsageEvent.objects.filter(workspace_id=ids["workspace_id"]).delete()
    from django.apps import apps

    if apps.is_installed("analytics"):  # not in a tree from before the rollups
        apps.get_model("analytics", "UsageRollup").objects.filter(workspace_id=ids["workspace_id"]).delete()
    return ids


def _rows(ids: dict[str, int], start: int, count: int) -> list[Any]:
    from gateway.usage import Usage

    names = {field.name for field in fields(Usage)}
    rows = []
    for n in range(start, start + count):
        duration = 2.0 + (n % 40) * 0.13
        values: dict[str, Any] = {
            **ids,
            "server_slug": "py",
            "tool": "add",
            "exposed_name": "py__add",
            "method": "tools/call",
            "created_at": BASE + n * GAP,
            "duration_ms": duration,
            "upstream_ms": duration * 0.6,
            "outcome": "ok",
            "http_status": 200,
            "client_name": "aerostack-profile",
            "client_version": "0",
        }
        rows.append(Usage(**{key: value for key, value in values.items() if key in names}))
    return rows


class _Callgrind:
    def __init__(self, directory: Path) -> None:
        source = directory / "cg_helper.c"
        library = directory / "cg_helper.so"
        source.write_text(_HELPER_C)
        subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(library), str(source)], check=True)  # noqa: S603, S607
        self.lib = ctypes.CDLL(str(library))
        self.lib.dump.argtypes = [ctypes.c_char_p]


def measure(args: argparse.Namespace) -> None:
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    _load(Path(args.root).resolve(), data_dir)
    from django.db import connection

    from gateway import usage

    try:
        from aerostack.db import release_connection as release
    except ImportError:  # a tree from before the pool: nothing to release

        def release() -> None:
            pass

    ids = _prepare(data_dir)
    grind = _Callgrind(Path(args.helper_dir)) if args.helper_dir else None
    profiler = None
    if args.cprofile:
        import cProfile

        profiler = cProfile.Profile(time.thread_time)  # CPU, not waits on the database
    writer = usage._Writer()
    sizes = [int(size) for size in args.batches.split(",")]
    print(f"{args.root} on {connection.vendor}: thread CPU per write() + release_connection()")
    position = 0
    for size in sizes:
        batches = max(5, args.rows // size)
        for _ in range(3):  # warm-up: statements prepared, rollup rows of the keys created
            writer.write(_rows(ids, position, size))
            release()
            position += size
        times = []
        if grind is not None:
            grind.lib.zero()
        for _ in range(batches):
            rows = _rows(ids, position, size)
            position += size
            if grind is not None:
                grind.lib.start()
            if profiler is not None:
                profiler.enable()
            started = time.thread_time()
            written = writer.write(rows)
            release()
            times.append(time.thread_time() - started)
            if profiler is not None:
                profiler.disable()
            if grind is not None:
                grind.lib.stop()
            if written != size:
                raise SystemExit(f"wrote {written} of {size} rows")
        if grind is not None:
            grind.lib.dump(f"batch={size} batches={batches}".encode())
        per_batch = statistics.median(times)
        print(
            f"  batch {size:4d} x {batches:4d}: {per_batch * 1e3:8.3f} ms CPU per batch,"
            f" {per_batch / size * 1e3:7.4f} ms per row"
        )
    if profiler is not None:
        profiler.dump_stats(args.cprofile)


def callgrind(args: argparse.Namespace, argv: list[str]) -> None:
    """Run ``measure`` under callgrind and print the instructions of each batch size's writes."""
    out_dir = Path(tempfile.mkdtemp(prefix="usage-writer-cg-"))
    inner = [a for a in argv if a != "--callgrind"]
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out_dir}/callgrind.out",
        sys.executable,
        "-m",
        "benchmarks.usage_writer",
        *inner,
        "--helper-dir",
        str(out_dir),
    ]
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent)  # noqa: S603
    for dump in sorted(out_dir.glob("callgrind.out.*"), key=lambda path: int(path.name.rsplit(".", 1)[1])):
        text = dump.read_text(errors="replace")
        label = re.search(r"^desc: Trigger: Client Request: (.*)$", text, re.MULTILINE)
        total = re.search(r"^totals: (\d+)", text, re.MULTILINE)
        if label is None or total is None or "batch=" not in label.group(1):
            continue
        found = dict(part.split("=") for part in label.group(1).split())
        size, batches = int(found["batch"]), int(found["batches"])
        instructions = int(total.group(1))
        print(
            f"  batch {size:4d} x {batches:4d}: {instructions / batches / 1e6:8.3f} M instructions per batch,"
            f" {instructions / batches / size / 1e3:8.1f} k per row"
        )
    shutil.rmtree(out_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--batches", default="1,10,40,250")
    parser.add_argument("--rows", type=int, default=1000, help="about this many rows per batch size")
    parser.add_argument("--cprofile")
    parser.add_argument("--callgrind", action="store_true", help="count instructions under callgrind")
    parser.add_argument("--helper-dir", help=argparse.SUPPRESS)  # set by --callgrind for the inner run
    args = parser.parse_args()
    if args.callgrind:
        callgrind(args, sys.argv[1:])
    else:
        measure(args)


if __name__ == "__main__":
    main()
