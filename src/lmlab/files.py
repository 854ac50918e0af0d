"""Writing files safely: a temporary name, fsync, then a rename, so a crash or a kill never leaves half a file
where a whole one was (POSIX renames within a folder are atomic), and a symbolic link planted in a folder
lmlab writes is replaced, never written through (a rename replaces the link itself; files lmlab opens in
place are opened with O_NOFOLLOW; sub-folders that are links are refused).

Which folders a command may write into at all is decided here too, in one place: `claim_output_folder`."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

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
    """open(path, mode) for the two files lmlab must write in place: the lock ("a+"; flock holds an inode, so
    a renamed new file would not be the one another writer waits on) and metrics.jsonl ("a"; rewriting the
    whole log by rename at every step would cost O(steps^2)). Both are opened with O_NOFOLLOW, so a symbolic
    link planted under the name is refused, and refused too when the opened file is not a plain file or has a
    second name (st_nlink > 1): a hard link there would carry the write to a file outside the run. Checked on
    the open descriptor, so a swap after the check cannot slip through."""
    flags = os.O_CREAT | os.O_APPEND | (os.O_RDWR if "+" in mode else os.O_WRONLY) | getattr(os, "O_NOFOLLOW", 0)
    refuse_link(path)
    try:
        fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0), 0o644)  # O_NONBLOCK: a FIFO there does not hang
    except OSError as err:
        if Path(path).is_symlink():  # made between the check and the open
            raise UnsafePath(f"{path} is a symbolic link; lmlab does not write through links") from None
        if os.path.lexists(path) and not_a_file(path):  # a FIFO without a reader: ENXIO
            raise UnsafePath(f"{path} is {not_a_file(path)}; lmlab writes only files of its own there; remove it "
                             "and run the command again") from None
        raise err
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        kind = "has another name (a hard link)" if stat.S_ISREG(info.st_mode) else f"is {_kind(info.st_mode)}"
        raise UnsafePath(f"{path} {kind}; lmlab writes only files of its own there; remove it and run the "
                         "command again")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, mode, encoding="utf-8")


def write_synced(path: Path, write) -> None:
    """write(path), then fsync, so a rename that follows can never expose a half-written file. Whatever was
    at `path` (a leftover, or a link, soft or hard, planted there) is removed first and the name is created
    exclusively (O_EXCL), so the write goes into a new file of lmlab's own, never into another's."""
    Path(path).unlink(missing_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), 0o644))
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


class DiskFull(LmlabError):
    """A file could not be written: no space left on its disk."""


def is_out_of_space(err: BaseException) -> bool:
    """Whether `err` says the disk is full: an OSError's errno, or the text of a writer that wraps it in its
    own exception (safetensors' SafetensorError reads "... StorageFull ... No space left on device")."""
    return isinstance(err, DiskFull) or getattr(err, "errno", None) == errno.ENOSPC or any(
        mark in str(err) for mark in ("No space left", "StorageFull", f"os error {errno.ENOSPC}"))


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), fsync it, then rename over `path` (atomic on POSIX within one folder).
    If `write` fails, the temporary file is removed and `path` is left as it was; a full disk is one line
    (DiskFull), whichever library's exception reported it."""
    tmp = temporary_path(path)
    try:
        write_synced(tmp, write)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, Exception) and is_out_of_space(err):
            raise DiskFull(f"{path}: disk full (no space left to write it); free some space and run the command "
                           "again; the file there before, if any, is kept") from None
        raise
    os.replace(tmp, path)
    sync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def not_a_file(path: str | Path) -> str | None:
    """None when `path` is a plain file (or a link to one); else what it is, for the one line of every "file
    expected" check: "missing", "a folder", "a named pipe (FIFO)", "a link to /dev/zero, a character
    device", "a broken link". Reading a FIFO or a device would hang or never end, so they are named, not read."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "a broken link" if path.is_symlink() else "missing"
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    if stat.S_ISREG(mode):
        return None
    kind = _kind(mode)
    return f"a link to {os.path.realpath(path)}, {kind}" if path.is_symlink() else kind


def parse_json(text: str | bytes, where: str | Path, error: type[LmlabError] = CheckpointError,
               bad: str = "not valid JSON") -> Any:
    """json.loads for every JSON a user hands lmlab (configs, runs' files, data lines, prepared meta.json, an
    imported model's config), or one line of `error`, "WHERE: BAD (why)": a syntax error, bytes that are not
    UTF-8, or nesting too deep for Python's parser (`[[[[...]]]]` raises RecursionError, a traceback else)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise error(f"{where}: {bad} (nested too deeply)") from None
    except UnicodeDecodeError as err:
        raise error(f"{where}: {bad} (not UTF-8 text at byte {err.start})") from None
    except ValueError as err:
        detail = ""  # the parser's reason and place; never the text, which may be a file that is not the user's
        if isinstance(err, json.JSONDecodeError):
            detail = f" ({err.msg}, line {err.lineno})" if err.lineno > 1 else f" ({err.msg})"
        raise error(f"{where}: {bad}{detail}") from None


def read_json_file(path: str | Path, error: type[LmlabError] = CheckpointError, bad: str = "not valid JSON",
                   what: str = "a JSON file") -> Any:
    """parse_json of a file's bytes; a path that is not a plain file (missing, a folder, a FIFO) is `error`
    too, saying what it is."""
    path = Path(path)
    problem = not_a_file(path)
    if problem:
        raise error(f"{path}: {what} expected, but it is {problem}")
    try:
        text = path.read_bytes()
    except OSError as err:
        raise error(f"{path}: cannot read {what} ({err.strerror or err})") from None
    return parse_json(text, path, error, bad)


def claim_default_file(path: str | Path, what: str, *, force: bool = False, hint: str = "") -> Path:
    """A file a command names itself (compare's val_curves.png, lr-find's plot), which lands beside files of
    the user's: as claim_output_file, and only where nothing is yet, unless --force. Nothing of a user's is
    replaced by a file the user did not name."""
    path = claim_output_file(path, what)
    if os.path.lexists(path) and not force:
        raise OutputRefused(f"{path} exists; {what} would replace it{hint or ''}; add --force to replace it")
    return path


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
        saved = read_json_file(path / RUN_CONFIG_FILE)
    except LmlabError:
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
