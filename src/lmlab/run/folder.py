"""The run folder. One class owns its layout and every read and write in it: the file names, atomic JSON
writes, the metrics log, the exclusive lock a writer holds, paths kept relative so a copied or moved run
still works, and the checks that a folder holds a run at all.

    RUN/config.json         the fully resolved config (data, model, train), with the model's context
    RUN/tokenizer.json      the tokenizer the run was trained with
    RUN/model.safetensors   the weights (the weight average, when train.ema_decay is on)
    RUN/trainer_state.pt    optimizer, step, random states, callbacks (loaded with weights_only=True)
    RUN/metrics.jsonl       one JSON record per logged step and per evaluation, deterministic
    RUN/summary.json        NLL per split, size, speed and time, written when training ends
    RUN/inspect.json, findings.json, report.html   the inspector's statistics, findings and page
    RUN/checkpoints/        the best weights kept by ModelCheckpoint
    RUN/.lock               held (flock) by the one process writing into the run
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmlab.data.sources import EMBEDDED
from lmlab.errors import CheckpointError, DataError
from lmlab.files import (
    LOCK_FILE,
    RUN_CONFIG_FILE,
    atomic_write_text,
    is_run_folder,
    not_a_file,
    open_in_place,
    parse_json,
    refuse_link,
)
from lmlab.run.config import RunConfig, build_model, resolve_config, upgrade_config
from lmlab.tokenizers import Tokenizer, load_tokenizer
from lmlab.training.checkpoint.format import (
    MODEL_FILE,
    STATE_FILE,
    data_fingerprint,
    load_weights,
    read_json,
    require_run_folder,
    rng_state,
    save_checkpoint,
    torch_load_safely,
)
from lmlab.training.checkpoint.parts import FORMAT

log = logging.getLogger(__name__)

CONFIG_FILE = RUN_CONFIG_FILE  # named in files.py, whose rule for output folders must recognise a run
TOKENIZER_FILE = "tokenizer.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
INSPECTION_FILE = "inspect.json"
FINDINGS_FILE = "findings.json"
REPORT_FILE = "report.html"
CHECKPOINTS_DIR = "checkpoints"
RUN_FILES = (CONFIG_FILE, TOKENIZER_FILE, MODEL_FILE, STATE_FILE, METRICS_FILE, SUMMARY_FILE, FINDINGS_FILE,
             REPORT_FILE, INSPECTION_FILE)


def is_run_or_its_start(path: Path) -> bool:
    """A run, or what a start killed before its first checkpoint left: lmlab's lock and run files only."""
    path = Path(path)
    if is_run_folder(path):
        return True
    ours = {LOCK_FILE, CHECKPOINTS_DIR, *RUN_FILES, *(f".{name}.tmp" for name in RUN_FILES)}
    names = {p.name for p in path.iterdir()}
    return LOCK_FILE in names and names <= ours


class RunLocked(CheckpointError):
    """Another process is writing into this run folder."""


class RunDir:
    """A run folder. Behaves as a path (`run_dir / "x"`, `os.fspath`) where callers need one."""

    def __init__(self, path: str | Path | RunDir):
        self.path = Path(path.path if isinstance(path, RunDir) else path)
        self._lock_handle = None

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __getattr__(self, name: str) -> Any:  # the rest of Path's reading side: exists(), iterdir(), ...
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.path, name)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # -- what the folder holds ------------------------------------------------------------------------------

    def holds_run(self) -> bool:
        return (self.path / CONFIG_FILE).is_file()

    def has_checkpoint(self) -> bool:
        return (self.path / MODEL_FILE).is_file()

    def require_run(self) -> None:
        """CheckpointError unless the folder holds a run to read."""
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path}: no such run directory")
        if not self.holds_run():
            problem = not_a_file(self.path / CONFIG_FILE)
            raise CheckpointError(f"{self.path}: not an lmlab run ({CONFIG_FILE} is {problem})")

    def require_checkpoint(self) -> None:
        """CheckpointError unless there is a checkpoint to resume, saying how to start over instead."""
        self.require_run()
        if not self.has_checkpoint():
            raise CheckpointError(f"{self.path}: no checkpoint yet (the run stopped before its first one); "
                                  "start it over with --force")

    def inside(self, relative: str | Path) -> Path:
        """A path kept in a checkpoint, relative to the run folder, resolved; refused if it leads outside."""
        path = Path(relative)
        if path.is_absolute() or ".." in path.parts:
            raise CheckpointError(f"{self.path}: the path {str(relative)!r} kept in the checkpoint leads outside "
                                  "the run folder")
        return self.path / path

    def relative(self, path: str | Path) -> str:
        """`path` relative to the run folder, as a checkpoint keeps it."""
        return Path(path).relative_to(self.path).as_posix()

    # -- the lock -------------------------------------------------------------------------------------------

    def lock(self, command: str = "lmlab") -> RunDir:
        """Take the exclusive lock of a writer (creating the folder), or RunLocked naming the process that
        holds it. An OS file lock: the kernel releases it when the process ends, even after `kill -9`.
        Readers (eval, sample, inspect, compare) never lock, so they keep working on a live run."""
        if self._lock_handle is not None:
            return self
        for name in (LOCK_FILE, CHECKPOINTS_DIR, *RUN_FILES):  # a writer replaces files; it never follows links
            refuse_link(self.path / name, "in a run folder")
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open_in_place(self.path / LOCK_FILE, "a+")  # held until unlock(); a link there is refused
        try:
            import fcntl
        except ImportError:  # Windows: no flock; a second writer is not caught there
            self._lock_handle = handle
            return self
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunLocked(f"{self.path} is in use by {holder}; wait for it to finish or stop it") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} ({command})\n")
        handle.flush()
        self._lock_handle = handle
        return self

    def unlock(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()  # closing releases the flock
            self._lock_handle = None

    def __enter__(self) -> RunDir:
        return self.lock()

    def __exit__(self, *exc: Any) -> None:
        self.unlock()

    # -- files ----------------------------------------------------------------------------------------------

    def write_json(self, name: str, value: Any) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / name, json.dumps(value, indent=2) + "\n")

    def read_json(self, name: str, what: str, kind: type = dict) -> Any:
        return read_json(self.path / name, what, kind)

    def write_config(self, config: RunConfig, context: int) -> None:
        """config.json: the resolved config, with the context the model was built for."""
        saved = config.to_dict()
        saved["model"]["block_size"] = context
        self.write_json(CONFIG_FILE, saved)

    def read_config(self) -> tuple[RunConfig, int]:
        """(the run's config, the model's context), or CheckpointError naming what is wrong with the file."""
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path}: no such run directory")
        saved = self.read_json(CONFIG_FILE, "config")
        if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
            raise CheckpointError(f"{self.path / CONFIG_FILE}: not an lmlab config (it needs data, model and "
                                  "train sections)")
        context = saved["model"].get("block_size", 0)
        try:
            return resolve_config(upgrade_config(saved)), context if isinstance(context, int) else 0
        except CheckpointError:
            raise
        except Exception as err:  # noqa: BLE001 -- ConfigError or a value no config accepts: one line either way
            raise CheckpointError(f"{self.path / CONFIG_FILE}: {err}") from None

    def save_tokenizer(self, tokenizer: Tokenizer) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tokenizer.save(self.path / TOKENIZER_FILE)

    def load_tokenizer(self) -> Tokenizer:
        return load_tokenizer(self.path / TOKENIZER_FILE)

    def require_same_data(self, train_split: Any, source: str) -> None:
        """DataError if the training split rebuilt from `source` is not the one this run trained on (the file
        changed since), by the fingerprint its checkpoint keeps; runs that keep none (imported) pass."""
        try:  # mmap: only the fingerprint is read, not the optimizer state
            state = torch_load_safely(self.path / STATE_FILE, mmap=True)
        except Exception:  # noqa: BLE001 -- no or unreadable trainer state: nothing to compare against
            return
        saved = state.get("data_fingerprint") if isinstance(state, dict) else None
        if isinstance(saved, str) and saved != data_fingerprint(train_split):
            raise DataError(f"{source}: the data changed since {self.path} was trained (its training split "
                            "differs from the one the run kept a fingerprint of); restore the data, or train again")

    def read_summary(self) -> dict[str, Any]:
        return self.read_json(SUMMARY_FILE, "summary")

    # -- the metrics log ------------------------------------------------------------------------------------

    def append_metric(self, record: dict[str, Any]) -> None:
        require_run_folder(self.path)  # O_CREAT would fail without the folder; say why in one line
        with open_in_place(self.path / METRICS_FILE, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every well-formed record of metrics.jsonl, in order (a line cut short by a kill is skipped)."""
        path = self.path / METRICS_FILE
        if not path.is_file():
            return []
        records = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = parse_json(line, path)
            except CheckpointError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def truncate_metrics(self, step: int) -> None:
        """Drop the records logged after `step` (those of a run killed after its last checkpoint)."""
        path = self.path / METRICS_FILE
        if not path.is_file():
            return
        kept = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                if _record_step(line) is not None and _record_step(line) <= step]
        atomic_write_text(path, "".join(line + "\n" for line in kept))

    def is_untrained_import(self) -> bool:
        """Whether the run is a model made elsewhere (`create_untrained`: `lmlab import`) that has not been
        trained here: its trainer state is the one `create_untrained` writes, without an optimizer. Every
        checkpoint a Trainer saves holds its optimizer, even one at step 0 (a run stopped before its first
        step), so an unfinished run is never taken for an import."""
        try:  # mmap: the keys, not the tensors
            state = torch.load(self.path / STATE_FILE, weights_only=True, map_location="cpu", mmap=True)
        except Exception:  # noqa: BLE001 -- no or unreadable trainer state: nothing says it is an import
            return False
        return isinstance(state, dict) and state.get("step") == 0 and "optimizer" not in state

    def create_untrained(self, config: RunConfig, tokenizer: Tokenizer, model: torch.nn.Module) -> None:
        """A run at step 0 from a model made elsewhere (an imported GPT-2): config, tokenizer, the weights and
        a fresh trainer state, so it samples, evaluates and fine-tunes with `--resume` as any run does."""
        context = model.config.block_size
        self.write_config(config, context)
        self.save_tokenizer(tokenizer)
        fresh = torch.Generator().manual_seed(config.train.seed)
        progress = {"step": 0, "tokens_seen": 0, "nonfinite_steps": 0, "train_seconds": 0.0,
                    "last_val_loss": None, "lr_scale": 1.0, "last_eval_step": None}
        save_checkpoint(self.path, model, {"format": FORMAT, "step": 0, "progress": progress,
                                           "rng": rng_state(fresh), "callbacks": "{}"})

    # -- starting over --------------------------------------------------------------------------------------

    def clear(self) -> None:
        """Remove a previous run's files (and a crashed write's leftovers); other files stay. A checkpoints
        folder that is a link loses the link, never the files it points to."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
            (self.path / f".{name}.tmp").unlink(missing_ok=True)
        checkpoints = self.path / CHECKPOINTS_DIR
        if checkpoints.is_symlink():
            checkpoints.unlink()
        else:
            shutil.rmtree(checkpoints, ignore_errors=True)


def default_run_dir(name: str, source: str) -> Path:
    """runs/NAME-DATA for a run given no folder, numbered (-2, -3, ...) when that one is taken; a numbered
    one is said at once, as a run that lands beside the one it was meant to follow is easily missed."""
    stem = Path(source).stem if source not in EMBEDDED else source
    base = Path("runs") / f"{name}-{stem}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    if n == 2:
        log.info("%s is taken; writing to %s (--out picks the folder)", base, out)
    elif n > 2:
        log.info("%s to %s are taken; writing to %s (--out picks the folder)", base,
                 base.with_name(f"{base.name}-{n - 1}"), out)
    return out


def _record_step(line: str) -> int | None:
    try:
        step = parse_json(line, METRICS_FILE).get("step")
    except (CheckpointError, AttributeError):
        return None
    return step if isinstance(step, int) else None


@dataclass
class LoadedRun:
    """What sampling, evaluation and export need of a trained run."""

    run_dir: RunDir
    config: RunConfig
    tokenizer: Tokenizer
    model: torch.nn.Module
    step: int


def load_run(run_dir: str | Path | RunDir, device: str | torch.device = "cpu") -> LoadedRun:
    """The run in `run_dir`: its config, tokenizer and model with the saved weights, in eval mode."""
    run_dir = RunDir(run_dir)
    config, context = run_dir.read_config()
    tokenizer = run_dir.load_tokenizer()
    model = build_model(config, tokenizer, context)
    step = load_weights(model, run_dir / MODEL_FILE)
    model.to(device).eval()
    return LoadedRun(run_dir, config, tokenizer, model, step)
