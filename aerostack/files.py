"""Private files of the embedded setup under the data folder (``var/``): readable by the server's user only.

The SQLite database holds password hashes, token hashes and encrypted upstream credentials, and the secret
key signs sessions: none of them may be world-readable. SQLite creates its ``-wal`` and ``-shm`` files with
the permissions of the database file, so creating the database file 0600 before the first connection makes
all three private, whatever the process umask.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


def private_directory(path: Path, *, tighten_existing: bool) -> None:
    """Create ``path`` with mode 0700. An existing one is tightened only when asked: the default ``var/``
    is ours, while a configured ``AEROSTACK_DATA_DIR`` may be a folder the operator set up on purpose."""
    try:
        path.mkdir(mode=DIRECTORY_MODE, parents=True)
    except FileExistsError:
        if tighten_existing and stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(DIRECTORY_MODE)


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it is missing (an empty file is a valid empty SQLite
    database); tighten an existing one left readable by others (installs from before this rule)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(FILE_MODE)


def private_sqlite_database(path: Path) -> None:
    """The database file and any ``-wal`` / ``-shm`` file beside it, 0600."""
    private_file(path)
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists() and stat.S_IMODE(companion.stat().st_mode) & 0o077:
            companion.chmod(FILE_MODE)
