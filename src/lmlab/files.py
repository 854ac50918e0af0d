"""Writing files safely: a temporary name, fsync, then a rename, so a crash or a kill never leaves half a file
where a whole one was (POSIX renames within a folder are atomic), and a symbolic link planted in a folder
lmlab writes is replaced, never written through (a rename replaces the link itself; files lmlab opens in
place are opened with O_NOFOLLOW; sub-folders that are links are refused).

Which folders a command may write into at all is decided in one place: training/run_dir.py's
`claim_output_folder`."""

from __future__ import annotations

import os
from pathlib import Path

from lmlab.errors import LmlabError


class UnsafePath(LmlabError):
    """A path lmlab would write through is a symbolic link (it could lead outside the folder)."""


def temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def refuse_link(path: Path, what: str = "") -> Path:
    """`path`, or UnsafePath if it is a symbolic link (writing through it would change a file elsewhere)."""
    if Path(path).is_symlink():
        raise UnsafePath(f"{path} is a symbolic link{' (' + what + ')' if what else ''}; lmlab does not write "
                         "through links; remove it and run the command again")
    return Path(path)


def subfolder(parent: Path, name: str) -> Path:
    """parent/name as a real folder (created if missing), never a link to one elsewhere."""
    folder = refuse_link(Path(parent) / name, "a folder lmlab writes into")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_in_place(path: Path, mode: str):
    """open(path, mode) for a file lmlab appends to or locks in place ("a", "a+"): O_NOFOLLOW, so a link
    planted under its name is refused instead of followed."""
    flags = os.O_CREAT | os.O_APPEND | (os.O_RDWR if "+" in mode else os.O_WRONLY) | getattr(os, "O_NOFOLLOW", 0)
    refuse_link(path)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as err:
        if Path(path).is_symlink():  # made between the check and the open
            raise UnsafePath(f"{path} is a symbolic link; lmlab does not write through links") from None
        raise err
    return os.fdopen(fd, mode, encoding="utf-8")


def write_synced(path: Path, write) -> None:
    """write(path), then fsync, so a rename that follows can never expose a half-written file. Whatever was
    at `path` (a leftover, or a link planted there) is removed first, so the write makes a new file."""
    Path(path).unlink(missing_ok=True)
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
