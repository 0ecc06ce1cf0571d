"""Debian's nginx with deploy/nginx.conf in front of a live Aerostack, for tests.

The shipped config is rewritten for a test: listen on a free loopback port without TLS, proxy to the live
gateway's port, keep every file (pid, logs, temp bodies) in a temp folder, and drop the HTTP->HTTPS server.
Everything else (buffering, timeouts, X-Forwarded-For, body limits, the per-address connection cap) is used
exactly as shipped. Also used by ``benchmarks/stress.py --through-nginx``.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.live import ROOT, free_port, wait_for_port

CONFIG = ROOT / "deploy" / "nginx.conf"
NGINX_CANDIDATES = ("/usr/sbin/nginx", "nginx")


def nginx_binary() -> str | None:
    for candidate in NGINX_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def loopback_config(gateway_port: int, listen_port: int) -> str:
    """deploy/nginx.conf for loopback: plain HTTP on ``listen_port``, proxying to ``gateway_port``."""
    text = CONFIG.read_text()
    text = text.split("# Plain HTTP: redirect to HTTPS.")[0]  # the redirect server needs port 80
    text = re.sub(r"^\s*listen \[::\]:443 ssl http2;\n", "", text, flags=re.M)
    text, listens = re.subn(r"listen 443 ssl http2;", f"listen 127.0.0.1:{listen_port};", text)
    text = re.sub(r"^\s*ssl_\w+ .*\n", "", text, flags=re.M)
    text, upstreams = re.subn(r"server 127\.0\.0\.1:8000;", f"server 127.0.0.1:{gateway_port};", text)
    if listens != 1 or upstreams != 1 or "ssl" in text.replace("ssl_", ""):
        raise RuntimeError("deploy/nginx.conf changed shape: update tests/e2e/nginx.py")
    return text


@dataclass
class RunningNginx:
    port: int
    folder: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def nginx_in_front(gateway_port: int, *, worker_connections: int = 1024) -> Iterator[RunningNginx]:
    """nginx (one worker) in front of ``gateway_port``. ``worker_connections`` counts both sides of a
    proxied request (client and gateway); the stress run raises it, and the worker's descriptor limit with it.
    """
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed")
    with tempfile.TemporaryDirectory(prefix="aerostack-nginx-") as tmp:
        folder = Path(tmp)
        port = free_port()
        (folder / "aerostack.conf").write_text(loopback_config(gateway_port, port))
        # As root, nginx's workers run as "nobody" unless told otherwise, and could not use the temp folder.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
        temp_paths = "\n".join(
            f"    {kind}_temp_path {folder / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (folder / "nginx.conf").write_text(
            f"""{user}
worker_processes 1;
worker_rlimit_nofile {2 * worker_connections + 64};
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} info;
events {{ worker_connections {worker_connections}; }}
http {{
    access_log {folder / "access.log"};
{temp_paths}
    include {folder / "aerostack.conf"};
}}
"""
        )
        check = subprocess.run(
            [binary, "-t", "-p", str(folder), "-c", str(folder / "nginx.conf")],
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
        log = folder / "nginx.out"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [binary, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port(port, process, log)
            yield RunningNginx(port, folder, process)
        finally:
            process.terminate()  # SIGTERM: nginx's fast shutdown, by its own PID
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
