"""A real Aerostack served by gunicorn on 127.0.0.1, for browser and end-to-end tests.

Each server gets its own data folder (SQLite database, secret key), so tests never share state with a
developer's ``var/``. With DATABASE_URL/REDIS_URL in the environment the server uses those instead.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode}:\n{log.read_text(errors='replace')[-4000:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(
        f"server did not listen on {port} within {timeout}s:\n{log.read_text(errors='replace')[-4000:]}"
    )


@dataclass
class LiveServer:
    url: str
    port: int
    data_dir: Path
    log: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def manage(self, *args: str) -> str:
        """Run a manage.py command against this server's database; returns its stdout."""
        result = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def server_env(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update({"AEROSTACK_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO"})
    env.update(extra or {})
    return env


@contextmanager
def scratch_database(env: dict[str, str]) -> Iterator[None]:
    """With DATABASE_URL set, give the server a fresh PostgreSQL database of its own, dropped afterwards,
    and a cache key prefix of its own, so live servers never see each other's (or a developer's) data."""
    url = env.get("DATABASE_URL")
    env["CACHE_KEY_PREFIX"] = f"aerostack-live-{secrets.token_hex(4)}"
    if not url:
        yield
        return
    import psycopg

    name = f"aerostack_live_{secrets.token_hex(6)}"
    parts = urlsplit(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{name}"))
    try:
        yield
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _start_gunicorn(port: int, env: dict[str, str], log: Path, workers: int) -> subprocess.Popen[bytes]:
    with log.open("ab") as log_file:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "aerostack.asgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--access-logfile",
                "-",
                "--graceful-timeout",
                "5",
            ],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextmanager
def live_cluster(
    nodes: int = 1,
    *,
    workers: int = 1,
    threads: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[list[LiveServer]]:
    """``nodes`` gunicorn servers sharing one database, one cache and one secret key: the scale-out setup
    when DATABASE_URL and REDIS_URL are in ``extra_env`` or the environment. The serving model and its lanes
    are those of ``make run`` (gunicorn.conf.py); ``extra_env`` may size them (SERVER_GATEWAY_THREADS, ...).

    ``threads`` is accepted and ignored: callers written for the 8-thread gthread model keep working, and
    get the lanes of ``make run`` (a request no longer needs a thread of its own to be admitted)."""
    with tempfile.TemporaryDirectory(prefix="aerostack-live-") as tmp, ExitStack() as stack:
        data_dir = Path(tmp)
        env = server_env(data_dir, extra_env)
        env.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
        stack.enter_context(scratch_database(env))
        servers = []
        for index in range(nodes):
            port = free_port()
            log = data_dir / f"server-{index}.log"
            servers.append(
                LiveServer(url=f"http://127.0.0.1:{port}", port=port, data_dir=data_dir, log=log, env=env)
            )
        servers[0].manage("migrate", "--noinput")
        try:
            for server in servers:
                process = _start_gunicorn(server.port, env, server.log, workers)
                server.processes.append(process)
            for server in servers:
                wait_for_port(server.port, server.processes[0], server.log)
            yield servers
        finally:
            for server in servers:
                for process in server.processes:
                    _stop(process)


@contextmanager
def live_server(
    *, workers: int = 1, threads: int | None = None, extra_env: dict[str, str] | None = None
) -> Iterator[LiveServer]:
    with live_cluster(1, workers=workers, threads=threads, extra_env=extra_env) as servers:
        yield servers[0]
