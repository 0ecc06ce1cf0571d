"""Real MCP upstream servers for end-to-end tests, started on 127.0.0.1 by the tests themselves.

Plain helpers, no pytest dependency; wrap them in fixtures, e.g.::

    @pytest.fixture(scope="module")
    def everything():
        if not node_available():
            pytest.skip("node is not installed")
        upstream = start_everything_server()
        yield upstream
        upstream.stop()

Upstreams:
- ``start_everything_server()``: ``@modelcontextprotocol/server-everything`` (version pinned in
  ``package.json`` / ``package-lock.json`` next to this file), started as
  ``PORT=N node -r loopback.cjs node_modules/@modelcontextprotocol/server-everything/dist/index.js
  streamableHttp`` with an environment of PATH and PORT only (it has a ``get-env`` tool).
  ``loopback.cjs`` forces its ``listen(PORT)`` onto 127.0.0.1.
- ``start_fault_upstream()``: ``fault_upstream.py`` (standard library only), one process serving many
  misbehaving upstreams, one per path (hangs, HTTP 500, invalid JSON, cut SSE, huge replies, ...).
- ``start_python_upstream(*extra_args)``: ``py_upstream.py`` (official Python SDK ``MCPServer``),
  extra args ``--stateless`` / ``--json-response`` / ``--name NAME``.

Both serve ``http://127.0.0.1:<port>/mcp``. Server output goes to temp files (``stdout_path`` /
``stderr_path``), never to pipes.

``raw_call()`` does one raw streamable-HTTP POST with the standard library and returns the
parsed JSON-RPC messages, whether the reply was JSON or SSE.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

E2E_DIR = Path(__file__).resolve().parent
LOOPBACK_PRELOAD = E2E_DIR / "loopback.cjs"
PY_UPSTREAM_SCRIPT = E2E_DIR / "py_upstream.py"
EVERYTHING_PACKAGE = "@modelcontextprotocol/server-everything"
EVERYTHING_ENTRY = (
    E2E_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
)
HOST = "127.0.0.1"
MCP_PATH = "/mcp"
LEGACY_PROTOCOL_VERSION = "2025-11-25"
ACCEPT_BOTH = "application/json, text/event-stream"

_running: list[RunningUpstream] = []


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the start helpers retry on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningUpstream:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    stdout_path: Path | None = None
    stderr_path: Path | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port or 0)

    @property
    def host_header(self) -> str:
        """The Host header this upstream expects (``127.0.0.1:<port>``)."""
        return f"{HOST}:{self.port}"

    def stderr_text(self) -> str:
        return _read_text(self.stderr_path)

    def stdout_text(self) -> str:
        return _read_text(self.stdout_path)

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the process by its PID, wait, kill after ``timeout``. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        proc = self.process
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=timeout)
        with contextlib.suppress(ValueError):
            _running.remove(self)

    def __enter__(self) -> RunningUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_leftovers() -> None:  # safety net if a test forgets to stop an upstream
    for upstream in list(_running):
        with contextlib.suppress(Exception):
            upstream.stop(timeout=2.0)


def _read_text(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _spawn(
    name: str,
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    port: int,
    timeout: float,
) -> RunningUpstream:
    """Start ``argv``, output to temp files, wait (bounded) until ``port`` accepts connections."""
    log_dir = Path(tempfile.mkdtemp(prefix=f"aerostack-e2e-{name}-"))
    stdout_path = log_dir / "stdout.log"
    stderr_path = log_dir / "stderr.log"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            argv,
            cwd=str(cwd),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # a Ctrl-C in the test runner does not hit it; we stop it by PID
        )
    upstream = RunningUpstream(
        name=name,
        url=f"http://{HOST}:{port}{MCP_PATH}",
        process=proc,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
    )
    _running.append(upstream)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            upstream.stop()
            raise UpstreamStartError(
                f"{name} exited with code {proc.returncode} before listening on {port}", upstream
            )
        if _port_accepts(port):
            return upstream
        if time.monotonic() > deadline:
            upstream.stop()
            raise UpstreamStartError(f"{name} did not listen on {HOST}:{port} within {timeout}s", upstream)
        time.sleep(0.1)


class UpstreamStartError(RuntimeError):
    def __init__(self, message: str, upstream: RunningUpstream) -> None:
        self.upstream = upstream
        self.stderr = upstream.stderr_text()
        super().__init__(
            f"{message}\n--- stderr ({upstream.stderr_path}) ---\n{self.stderr[-4000:]}"
            f"\n--- stdout ({upstream.stdout_path}) ---\n{upstream.stdout_text()[-2000:]}"
        )


def _start_with_retries(
    name: str, make_argv_env, cwd: Path, timeout: float, attempts: int = 3
) -> RunningUpstream:
    """free_port() can race with another process; retry on a fresh port if the server dies early."""
    last: UpstreamStartError | None = None
    for _ in range(attempts):
        port = free_port()
        argv, env = make_argv_env(port)
        try:
            return _spawn(name, argv, env=env, cwd=cwd, port=port, timeout=timeout)
        except UpstreamStartError as exc:
            last = exc
            address_in_use = "EADDRINUSE" in exc.stderr or "in use" in exc.stderr
            if exc.upstream.process.returncode is None or not address_in_use:
                raise
    assert last is not None
    raise last


# --------------------------------------------------------------------------- node / npm


def node_available() -> bool:
    """True when a working ``node`` (>= 18) and ``npm`` are on PATH."""
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        return False
    try:
        out = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
        return int(out.strip().lstrip("v").split(".")[0]) >= 18
    except (OSError, subprocess.SubprocessError, ValueError):
        return False


INSTALLED_MARKER = E2E_DIR / "node_modules" / ".aerostack-installed"


def _installed() -> bool:
    """Installed completely, for this lock file: the marker is written only after ``npm ci`` succeeded, so
    a parallel caller never starts the server from a half-extracted node_modules."""
    lock_digest = hashlib.sha256((E2E_DIR / "package-lock.json").read_bytes()).hexdigest()
    try:
        return INSTALLED_MARKER.read_text() == lock_digest and EVERYTHING_ENTRY.is_file()
    except OSError:
        return False


def ensure_node_modules(timeout: float = 300) -> None:
    """``npm ci`` in tests/e2e once, if the pinned server is not installed; safe for parallel callers."""
    if _installed():
        return
    digest = hashlib.sha256(str(E2E_DIR).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"aerostack-e2e-npm-ci-{digest}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other workers block here until the first install finished
        try:
            if _installed():
                return
            npm = shutil.which("npm")
            if npm is None:
                raise RuntimeError("npm is not on PATH")
            result = subprocess.run(
                [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                cwd=str(E2E_DIR),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if result.returncode != 0 or not EVERYTHING_ENTRY.is_file():
                raise RuntimeError(
                    f"npm ci failed in {E2E_DIR} (rc={result.returncode}):\n{result.stderr[-4000:]}"
                )
            INSTALLED_MARKER.write_text(
                hashlib.sha256((E2E_DIR / "package-lock.json").read_bytes()).hexdigest()
            )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def start_everything_server(timeout: float = 30, port: int | None = None) -> RunningUpstream:
    """Start the pinned server-everything over streamable HTTP on 127.0.0.1 (env: PATH and PORT only);
    ``port``: on that port (an upstream restarted where the gateway knows it), else on a free one."""
    ensure_node_modules()
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH")

    def argv_env(port: int) -> tuple[list[str], dict[str, str]]:
        argv = [node, "-r", str(LOOPBACK_PRELOAD), str(EVERYTHING_ENTRY), "streamableHttp"]
        return argv, {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PORT": str(port)}

    if port is not None:
        argv, env = argv_env(port)
        return _spawn("server-everything", argv, env=env, cwd=E2E_DIR, port=port, timeout=timeout)
    return _start_with_retries("server-everything", argv_env, E2E_DIR, timeout)


def start_python_upstream(*extra_args: str, timeout: float = 20) -> RunningUpstream:
    """Start py_upstream.py with ``sys.executable`` (extra args: --stateless, --json-response, --name N)."""

    def argv_env(port: int) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, str(PY_UPSTREAM_SCRIPT), str(port), *extra_args]
        return argv, {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1"}

    return _start_with_retries("py-upstream", argv_env, E2E_DIR, timeout)


MODERN_UPSTREAM_SCRIPT = E2E_DIR / "modern_upstream.py"


def start_modern_upstream(*extra_args: str, timeout: float = 20, port: int | None = None) -> RunningUpstream:
    """Start modern_upstream.py: the SDK server gated to 2026-07-28 only (no initialize, no sessions); extra
    args: --refuse-listen. ``port``: on that port (an upstream restarted where the gateway knows it)."""

    def argv_env(port: int) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, str(MODERN_UPSTREAM_SCRIPT), str(port), *extra_args]
        return argv, {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1"}

    if port is not None:
        argv, env = argv_env(port)
        return _spawn("modern-upstream", argv, env=env, cwd=E2E_DIR, port=port, timeout=timeout)
    return _start_with_retries("modern-upstream", argv_env, E2E_DIR, timeout)


FAULT_UPSTREAM_SCRIPT = E2E_DIR / "fault_upstream.py"


def start_fault_upstream(timeout: float = 20) -> RunningUpstream:
    """Start fault_upstream.py (stdlib only): ``url`` is its base, ``http://127.0.0.1:<port>``; each
    ``<url>/<mode>/<name>?...`` is an upstream of its own (see that file for the modes)."""

    def argv_env(port: int) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, str(FAULT_UPSTREAM_SCRIPT), str(port)]
        return argv, {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1"}

    upstream = _start_with_retries("fault-upstream", argv_env, E2E_DIR, timeout)
    upstream.url = f"http://{HOST}:{upstream.port}"
    return upstream


# --------------------------------------------------------------------------- raw wire


def parse_sse(body: str) -> list[dict[str, Any]]:
    """JSON-RPC messages carried by an SSE body (events with empty data, e.g. priming events, skipped)."""
    messages: list[dict[str, Any]] = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
        payload = "\n".join(data).strip()
        if payload:
            messages.append(json.loads(payload))
    return messages


def raw_call(
    url: str,
    method: str,
    params: dict[str, Any] | None = None,
    session_id: str | None = None,
    protocol_version: str | None = LEGACY_PROTOCOL_VERSION,
    *,
    request_id: int | str = 1,
    headers: dict[str, str] | None = None,
    http_method: str = "POST",
    timeout: float = 15.0,
) -> tuple[int, dict[str, str], list[dict[str, Any]]]:
    """One raw streamable-HTTP exchange; returns ``(status, headers, messages)``.

    Sends ``Accept: application/json, text/event-stream`` and ``Content-Type: application/json``,
    ``Mcp-Session-Id`` when ``session_id`` is given and ``MCP-Protocol-Version`` unless
    ``protocol_version`` is None. A ``method`` starting with ``notifications/`` is sent without an
    id. ``headers`` override/add headers (``Host`` too). Response header names are lower-cased;
    ``messages`` is the list of JSON-RPC messages from a JSON or SSE body (``[]`` for an empty or
    non-JSON-RPC body; the raw text is then under ``headers["x-raw-body"]``). The whole body is
    read: fine for POSTs, whose SSE stream ends after the response; do not use it for the GET stream.
    """
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or HOST, parts.port or 80, timeout=timeout)
    send_headers = {"Accept": ACCEPT_BOTH, "Content-Type": "application/json"}
    if session_id is not None:
        send_headers["Mcp-Session-Id"] = session_id
    if protocol_version is not None:
        send_headers["MCP-Protocol-Version"] = protocol_version
    send_headers.update(headers or {})
    body: bytes | None = None
    if http_method == "POST":
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if not method.startswith("notifications/"):
            message["id"] = request_id
        if params is not None:
            message["params"] = params
        body = json.dumps(message).encode()
    try:
        conn.request(http_method, parts.path or "/", body=body, headers=send_headers)
        resp = conn.getresponse()
        raw = resp.read().decode("utf-8", errors="replace")
        resp_headers = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    content_type = resp_headers.get("content-type", "").lower()
    messages: list[dict[str, Any]] = []
    try:
        if content_type.startswith("text/event-stream"):
            messages = parse_sse(raw)
        elif raw.strip():
            parsed = json.loads(raw)
            messages = parsed if isinstance(parsed, list) else [parsed]
    except ValueError:
        messages = []
    if not messages and raw:
        resp_headers["x-raw-body"] = raw
    return resp.status, resp_headers, messages


def raw_initialize(
    url: str, protocol_version: str = LEGACY_PROTOCOL_VERSION, headers: dict[str, str] | None = None
) -> tuple[str | None, dict[str, Any]]:
    """Legacy handshake by hand: initialize, then notifications/initialized (expects 202).

    Returns ``(session_id or None, initialize result)``.
    """
    params = {
        "protocolVersion": protocol_version,
        "capabilities": {},
        "clientInfo": {"name": "aerostack-e2e-raw", "version": "0"},
    }
    status, resp_headers, messages = raw_call(
        url, "initialize", params, protocol_version=None, headers=headers
    )
    if status != 200 or not messages or "result" not in messages[-1]:
        raise RuntimeError(f"initialize failed: {status} {resp_headers} {messages}")
    session_id = resp_headers.get("mcp-session-id")
    negotiated = messages[-1]["result"]["protocolVersion"]
    status, _, _ = raw_call(
        url,
        "notifications/initialized",
        None,
        session_id=session_id,
        protocol_version=negotiated,
        headers=headers,
    )
    if status != 202:
        raise RuntimeError(f"notifications/initialized answered {status}, expected 202")
    return session_id, messages[-1]["result"]
