"""Whether hpo could create and write a file or folder: the one probe every command uses before work starts.

`hpo run` (its SQLite files), `hpo report`/`compare` (their output folder), `hpo data` (the cache folder)
and `hpo doctor` all ask the same question, so they all get the same answer: the nearest folder that
exists is probed with a temporary file, removed at once, and nothing is left behind.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from hpo.errors import UsageError


def write_problem(path: Path, *, is_folder: bool = False) -> str | None:
    """Why the file (or folder) `path` could not be created or written, or None; nothing is left behind."""
    if path.exists():
        if is_folder != path.is_dir():
            return "it is a folder, expected a file" if path.is_dir() else "it is a file, expected a folder"
        if not is_folder and not os.access(path, os.R_OK | os.W_OK):
            return "the file is read-only"
    folder = path if is_folder else path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        why = f" ({exc.strerror})" if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else ""
        return f"{existing} is not writable{why}"
    return None


def check_folder_writable(folder: Path, *, option: str = "--out") -> None:
    """Refuse an output folder that cannot be created or written, before any work is done."""
    problem = write_problem(folder, is_folder=True)
    if problem:
        raise UsageError(f"{option}: cannot write the folder {folder}: {problem}; choose a folder you can write to")
