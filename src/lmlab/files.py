"""Writing files safely: a temporary name, fsync, then a rename, so a crash or a kill never leaves half a file
where a whole one was (POSIX renames within a folder are atomic), and a symbolic link planted in a folder
lmlab writes is replaced, never written through (a rename replaces the link itself; files lmlab opens in
place are opened with O_NOFOLLOW; sub-folders that are links are refused).

Which folders a command may write into at all is decided here too, in one place: `claim_output_folder`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lmlab.errors import CheckpointError, LmlabError


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


# What marks a folder as an lmlab run, for the rule below (run/folder.py owns the run's layout and takes these
# names from here): files only a run holds, or its config.json. Its .lock alone is no mark: other tools
# (pytest) name their lock files so too.
RUN_CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
RUN_MARKERS = ("trainer_state.pt", "metrics.jsonl", "summary.json")


def is_run_folder(path: Path) -> bool:
    """A folder holding an lmlab run: a trainer file or a run config."""
    path = Path(path)
    if any(os.path.lexists(path / name) for name in RUN_MARKERS):
        return True
    try:
        saved = json.loads((path / RUN_CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(saved, dict) and ("lmlab_version" in saved or {"data", "model", "train"} <= set(saved))


class OutputRefused(CheckpointError):
    """A command was pointed at a folder it must not write into."""


def claim_output_folder(out: str | Path, what: str, *, may_replace=None, force_hint: str = "") -> Path:
    """The rule for every command that writes a folder (train, data prepare, import, export, ladder,
    forecast, classify, compare's plot), so none destroys work it does not own:

    - `out` is a new folder, or an empty one, or one this command wrote before (`may_replace(out)` says so:
      a run it resumes under the lock, an earlier export with --force, earlier prepared shards);
    - never a file, never a run folder it was not given to own, never a folder inside a run;
    - inside it lmlab writes by rename and never through a symbolic link (the helpers above).

    `what` names the command's output in the messages ("the export", "the prepared data"). Returns `out`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputRefused(f"{out} is a file, not a folder; choose another output folder")
    _refuse_inside_a_run(out, what)
    if not out.is_dir() or not any(out.iterdir()):
        return out
    if may_replace is not None and may_replace(out):
        return out
    if is_run_folder(out):
        raise OutputRefused(f"{out} is a run directory; {what} would overwrite its files; choose a new or empty "
                            "folder")
    raise OutputRefused(f"{out} is not empty; {what} goes into a new or empty folder{force_hint}")


def claim_output_file(path: str | Path, what: str) -> Path:
    """A single file a command writes beside its inputs (compare's plot): as for folders, never into a run
    or a folder inside one; it is written by rename, so a link under its name is replaced, not followed."""
    path = Path(path)
    if path.is_dir():
        raise OutputRefused(f"{path} is a folder; {what} needs a file name")
    _refuse_inside_a_run(path, what)
    return path


def _refuse_inside_a_run(path: Path, what: str) -> None:
    for parent in path.absolute().parents:
        if is_run_folder(parent):
            raise OutputRefused(f"{path} is inside the run {parent}; lmlab writes {what} only outside runs "
                                "(a run holds what training wrote)")
