"""Atomic file writes: a temporary name, fsync, then a rename, so a crash or a kill never leaves half a file
where a whole one was (POSIX renames within a folder are atomic)."""

from __future__ import annotations

import os
from pathlib import Path


def temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def write_synced(path: Path, write) -> None:
    """write(path), then fsync, so a rename that follows can never expose a half-written file."""
    write(path)
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def sync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), fsync it, then rename over `path` (atomic on POSIX within one folder).
    If `write` fails, the temporary file is removed and `path` is left as it was."""
    tmp = temporary_path(path)
    try:
        write_synced(tmp, write)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    sync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
