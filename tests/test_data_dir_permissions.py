"""Files under the data folder (``var/``) are private: the folder 0700, the SQLite database with its WAL and
SHM files and the secret key 0600, whatever the umask of the process that creates them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from aerostack.files import private_directory, private_sqlite_database

ROOT = Path(__file__).resolve().parent.parent
# Writes through Django's own connection (WAL mode from settings) and reports the modes while it is open.
WRITE_AND_STAT = """
import django, os, stat
django.setup()
from django.conf import settings
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE IF NOT EXISTS probe (x integer)")
    cursor.execute("INSERT INTO probe VALUES (1)")
folder = settings.DATA_DIR
for name in sorted(os.listdir(folder)):
    if name != "staticfiles":
        print(name, oct(stat.S_IMODE(os.stat(folder / name).st_mode)))
print("folder", oct(stat.S_IMODE(os.stat(folder).st_mode)))
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"}}
    env.update({"DJANGO_SETTINGS_MODULE": "aerostack.settings", "AEROSTACK_DATA_DIR": str(data_dir)})
    return env


def test_a_fresh_data_folder_is_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "var"
    # umask 022, the usual default: without the rule the database would come out 0644.
    migrate = subprocess.run(
        ["sh", "-c", f"umask 022 && exec {sys.executable} manage.py migrate --noinput"],
        cwd=ROOT,
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert _mode(data_dir) == 0o700
    assert _mode(data_dir / "secret_key") == 0o600
    assert _mode(data_dir / "aerostack.sqlite3") == 0o600
    assert (data_dir / "aerostack.sqlite3").stat().st_size > 0  # migrated: the pre-created file is used
    written = subprocess.run(
        ["sh", "-c", f'umask 022 && exec {sys.executable} -c "$0"', WRITE_AND_STAT],
        cwd=ROOT,
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert written.returncode == 0, written.stderr
    modes = dict(line.split() for line in written.stdout.splitlines())
    assert modes == {
        "aerostack.sqlite3": "0o600",
        "aerostack.sqlite3-shm": "0o600",
        "aerostack.sqlite3-wal": "0o600",
        "secret_key": "0o600",
        "folder": "0o700",
    }


def test_files_of_an_older_install_are_tightened(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    database = data_dir / "aerostack.sqlite3"
    for path in (database, data_dir / "aerostack.sqlite3-wal", data_dir / "aerostack.sqlite3-shm"):
        path.write_bytes(b"")
        path.chmod(0o644)
    private_directory(data_dir, tighten_existing=True)
    private_sqlite_database(database)
    assert _mode(data_dir) == 0o700
    assert {_mode(p) for p in data_dir.iterdir()} == {0o600}


def test_a_configured_folder_keeps_its_own_mode(tmp_path: Path) -> None:
    shared = tmp_path / "operator-made"
    shared.mkdir()
    shared.chmod(0o750)
    private_directory(shared, tighten_existing=False)
    assert _mode(shared) == 0o750
    database = shared / "aerostack.sqlite3"
    private_sqlite_database(database)
    assert _mode(database) == 0o600
