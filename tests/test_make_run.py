"""`make run` allows private upstreams only when it listens on a loopback address.

Runs the real Makefile with stand-ins for the virtualenv's python, pip and gunicorn that report what they
were given, so nothing is installed or served.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need

ROOT = Path(__file__).resolve().parent.parent
REPORT = '#!/bin/sh\necho "ALLOW_PRIVATE_UPSTREAMS=$ALLOW_PRIVATE_UPSTREAMS ARGS=$*"\n'


def make_run(tmp_path: Path, *args: str, **env: str) -> dict[str, str]:
    need(shutil.which("make") is not None, "make is not installed")
    bin_dir, venv = tmp_path / "bin", tmp_path / "venv"
    bin_dir.mkdir(exist_ok=True)
    venv.mkdir(exist_ok=True)
    for name, script in (
        ("python", "#!/bin/sh\nexit 0\n"),
        ("pip", "#!/bin/sh\nexit 0\n"),
        ("gunicorn", REPORT),
    ):
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    base = {
        k: v for k, v in os.environ.items() if k not in {"ALLOW_PRIVATE_UPSTREAMS", "MAKEFLAGS", "MFLAGS"}
    }
    result = subprocess.run(
        ["make", "-s", "run", f"BIN={bin_dir}", f"VENV={venv}", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("ALLOW_PRIVATE_UPSTREAMS="))
    allow, _, gunicorn_args = line.partition(" ARGS=")
    return {"allow": allow.split("=", 1)[1], "args": gunicorn_args, "stdout": result.stdout}


@pytest.mark.parametrize(
    ("host", "bind"), [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]"), ("localhost", "localhost")]
)
def test_loopback_allows_private_upstreams(tmp_path: Path, host: str, bind: str) -> None:
    ran = make_run(tmp_path, f"HOST={host}", "PORT=8123")
    assert ran["allow"] == "true"
    assert f"--bind {bind}:8123" in ran["args"]


def test_the_default_is_loopback(tmp_path: Path) -> None:
    ran = make_run(tmp_path)
    assert ran["allow"] == "true" and "--bind 127.0.0.1:8000" in ran["args"]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5"])  # noqa: S104 (what is tested)
def test_any_other_address_leaves_them_off(tmp_path: Path, host: str) -> None:
    ran = make_run(tmp_path, f"HOST={host}")
    assert ran["allow"] == "false"
    assert "(private upstreams allowed: false)" in ran["stdout"]


def test_an_explicit_setting_wins(tmp_path: Path) -> None:
    assert make_run(tmp_path, "HOST=0.0.0.0", ALLOW_PRIVATE_UPSTREAMS="true")["allow"] == "true"
    assert make_run(tmp_path, "HOST=127.0.0.1", ALLOW_PRIVATE_UPSTREAMS="false")["allow"] == "false"
