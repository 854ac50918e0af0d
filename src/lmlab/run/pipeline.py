"""The run as a library object: `lmlab.train(...)` is the one training pipeline (the `lmlab train` command,
the ladder and the Python API all call it) and `lmlab.load(...)` opens a finished run. Both return a `Run`,
whose methods mirror the command line: `.evaluate(split)`, `.sample(...)`, `.inspect()`, `.export(...)`.

    run = lmlab.train({"model": {"name": "mlp"}, "train": {"max_steps": 500}}, out="runs/mlp")
    run = lmlab.train({"train": {"max_steps": 1000}}, out="runs/mlp", resume=True)   # go on to step 1000
    lmlab.load("runs/mlp").sample(n=5, temperature=0.8)

How a run flows (each step's file): config layers -> RunConfig (run/config.py) -> data, tokenizer
and splits (run/data.py) -> model (run/config.py:build_model), with a defaulted batch and
context fitted to the vocabulary (run/fit_defaults.py) -> Trainer with its
callbacks (training/trainer.py, callbacks.py, inspector/) -> checkpoints (training/checkpoint/parts.py,
format.py) into the run folder (run/folder.py) -> summary.json and findings (here).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmlab.errors import CheckpointError
from lmlab.evaluate import evaluate_run
from lmlab.export import export_run
from lmlab.inspector import Inspector, find_problems
from lmlab.inspector.report import REPORT_FILE, reinspect, write_inspection
from lmlab.models import count_parameters
from lmlab.notebook import Findings, LiveCurves, Report, in_notebook, run_html
from lmlab.sample import SampleOptions, sample_texts
from lmlab.training.callbacks import Callback, EarlyStopping
from lmlab.training.distributed import Parallel
from lmlab.run.fit_defaults import fit_to_data
from lmlab.training.loggers import loggers_for
from lmlab.training.memory import check_step_memory
from lmlab.run.config import RunConfig, merge_layers, resolve_config
from lmlab.run.data import RunData, context_length, prepare_data, resolved_data_config
from lmlab.run.folder import FINDINGS_FILE, SUMMARY_FILE, LoadedRun, RunDir, load_run
from lmlab.training.scoring import mean_nll
from lmlab.training.trainer import Trainer, TrainingDiverged

log = logging.getLogger(__name__)


@dataclass
class Run(LoadedRun):
    """A run folder opened: `.config`, `.tokenizer`, `.model` (eval mode), `.step`, `.summary`,
    `.metrics`, `.findings`; after `lmlab.train`, also `.trainer` and `.interrupted`."""

    trainer: Trainer | None = field(default=None, repr=False)
    interrupted: bool = False

    @property
    def summary(self) -> dict[str, Any] | None:
        """summary.json: NLL per split, size, speed, time (None until training has finished)."""
        return self.run_dir.read_summary() if (self.run_dir / SUMMARY_FILE).is_file() else None

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl's records: {"step", "loss", "lr", "grad_norm", "tokens"} and {"step", "val_loss"}."""
        return self.run_dir.read_metrics()

    @property
    def findings(self) -> Findings | None:
        """The inspector's findings as written at the end of training (None if it did not watch)."""
        path = self.run_dir / FINDINGS_FILE
        return Findings(self.run_dir.read_json(FINDINGS_FILE, "findings", list)) if path.is_file() else None

    def evaluate(self, split: str = "val") -> dict[str, Any]:
        """NLL, perplexity and bits per token on a split of the run's own data (`lmlab eval`)."""
        return evaluate_run(self, split)

    def sample(self, n: int = 10, prompt: str = "", **options: Any) -> list[str]:
        """`n` samples (`lmlab sample`); options: max_new_tokens, temperature, top_k, top_p, seed."""
        return sample_texts(self, SampleOptions(num_samples=n, prompt=prompt, **options))

    def inspect(self, rebuild_report: bool = False) -> Findings:
        """The health findings, recomputed from the inspector's statistics (`lmlab inspect`)."""
        return Findings(reinspect(self.run_dir.path, rebuild_report=rebuild_report))

    def report(self) -> Report:
        """The inspector's report.html: shown inline when it is the last value of a notebook cell (its path
        elsewhere). Built from the inspector's statistics first if the folder lacks it."""
        if not (self.run_dir / REPORT_FILE).is_file():
            reinspect(self.run_dir.path, rebuild_report=True)
        return Report(self.run_dir / REPORT_FILE)

    def _repr_html_(self) -> str:
        """How a run shows in Jupyter: its summary, loss curves and findings."""
        return run_html(self)

    def export(self, format: str = "hf", out: str | Path = "", **options: Any) -> Path:  # noqa: A002
        """Write the run for other tools (`lmlab export`): "hf" (transformers) or "onnx"; returns the folder."""
        if not out:
            raise CheckpointError("export needs an output folder: run.export('hf', 'hf-out')")
        return export_run(self, format, out, **options)


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    """Open the run in `run_dir` (the folder `lmlab train --out` wrote) for sampling, evaluation, export."""
    loaded = load_run(run_dir, device)
    return Run(**{f.name: getattr(loaded, f.name) for f in dataclasses.fields(LoadedRun)})


def train(
    config: dict[str, Any] | RunConfig | None = None,
    *,
    out: str | Path,
    resume: bool = False,
    force: bool = False,
    callbacks: Sequence[Callback] = (),
    inspect: bool | int = True,
    data: RunData | None = None,
    parallel: Parallel | None = None,
) -> Run:
    """Train a model into the run folder `out` and return the finished `Run`.

    `config` holds any of the data, model and train sections (missing values take their defaults); with
    `resume=True` it is layered over the run's own config, and only train.* may change. `force` starts over
    in a folder that holds a run. `inspect` turns the inspector on (an int: sample every that many steps).
    `data` reuses splits prepared for this config (the ladder shares one split between rungs).
    Nothing in `out` is changed until every input has been checked; the folder is locked while training.
    On Ctrl-C or SIGTERM the trainer saves a checkpoint and the Run comes back with `interrupted=True`."""
    parallel = parallel or Parallel()
    run_dir = RunDir(out)
    config = config if config is not None else {}
    if resume:
        run_dir.require_checkpoint()  # before the lock creates the folder
    else:
        config = resolve_config(config)  # a bad value must fail before the folder is touched
    created = not run_dir.path.exists()
    started = time.perf_counter()
    keep_folder = False  # a folder this call created goes again if it fails before its first checkpoint
    if parallel.is_main:
        run_dir.lock("lmlab train")
    try:
        config, context, tokenizer = _resolve_run(run_dir, config, resume, force)
        data = data or prepare_data(config.data, tokenizer)
        config = dataclasses.replace(config, data=resolved_data_config(config.data, data))
        context = max(context, context_length(data))  # an imported GPT-2 keeps its own, wider context
        # A batch and context left to the defaults fit the vocabulary; a resumed config names every value.
        config, data, model, context = fit_to_data(config, data, context)
        check_step_memory(config.train, context, data.tokenizer.vocab_size)
        chosen = _callbacks(config, run_dir, inspect, callbacks, parallel)
        log.info("%s: %s parameters; data %s (%s mode, vocab %d, %s train tokens) -> %s", config.model_name,
                 f"{count_parameters(model):,}", config.data.source, data.mode, data.tokenizer.vocab_size,
                 f"{data.splits['train'].num_predictions:,}", run_dir)
        trainer = Trainer(model, data.splits["train"], data.splits["val"], config.train, run_dir=run_dir,
                          parallel=parallel, callbacks=[*chosen, _RunFiles(run_dir, config, data, context)])
        if resume:  # a checkpoint that cannot be resumed leaves the run as it was
            trainer.load_checkpoint(run_dir)
            log.info("resuming %s at step %d", run_dir, trainer.step)
        parallel.barrier()  # every rank has read the folder before rank 0 changes it
        if parallel.is_main and not resume:
            run_dir.clear()  # a previous run's files (with --force) or a killed start's leftovers
        interrupted = _fit(trainer, run_dir)
        keep_folder = True
    except TrainingDiverged:
        keep_folder = True  # its findings say what went wrong
        raise
    finally:
        run_dir.unlock()
        if not keep_folder and created and parallel.is_main and not run_dir.has_checkpoint():
            shutil.rmtree(run_dir.path, ignore_errors=True)  # it holds only what this failed command wrote
    run = _finished_run(run_dir, config, data, trainer, parallel, time.perf_counter() - started)
    run.interrupted = interrupted
    return run


def _resolve_run(run_dir: RunDir, config, resume: bool, force: bool):
    """(config, the model's saved context or 0, the run's tokenizer or None) for a new or resumed run."""
    if not resume:
        if run_dir.holds_run() and not force:
            raise CheckpointError(f"{run_dir} already holds a run; pass --resume to continue it or --force to "
                                  "start over")
        return config, 0, None
    saved, context = run_dir.read_config()
    changes = config.to_dict() if isinstance(config, RunConfig) else config
    if (changes.get("model") or {}).get("name", saved.model_name) != saved.model_name:
        raise CheckpointError(f"{run_dir} is a {saved.model_name} run; --resume continues the run's own data "
                              "and model; change only train.*")
    config = resolve_config(merge_layers(saved.to_dict(), changes))
    if config.data != saved.data or config.model != saved.model or config.model_name != saved.model_name:
        raise CheckpointError(f"{run_dir} is a {saved.model_name} run; --resume continues the run's own data "
                              "and model; change only train.*")
    return config, context, run_dir.load_tokenizer()


def _callbacks(config: RunConfig, run_dir: RunDir, inspect: bool | int, extra: Sequence[Callback],
               parallel: Parallel) -> list:
    """The inspector first (unless off), the loggers, then the caller's. The inspector watches on rank 0 only,
    and not under FSDP (its statistics would read one rank's shards); loggers write on rank 0 only."""
    fsdp = parallel.mode == "fsdp" and parallel.world_size > 1
    watch = [] if inspect is False or fsdp or not parallel.is_main else \
        [Inspector(every=None if inspect is True else int(inspect))]
    # Loggers (train.log) after the inspector: each sampled step goes out complete, with its findings at the end.
    loggers = loggers_for(config.train, run_dir, config.to_dict(), findings=find_problems)
    stopper = [EarlyStopping(patience=config.train.early_stopping, restore_best_weights=True)] \
        if config.train.early_stopping and not any(isinstance(c, EarlyStopping) for c in extra) else []
    # In Jupyter the curves redraw in the cell; a terminal shows the progress bar and log lines only.
    live = [LiveCurves(config.model_name)] if in_notebook() and parallel.is_main else []
    return [*watch, *loggers, *stopper, *live, *extra]


class _RunFiles(Callback):
    """Writes config.json and tokenizer.json once the first checkpoint is written, so the config in the
    folder always describes the checkpoint beside it: a failed start or a resume that dies before its first
    checkpoint leaves the old files as they were."""

    name = "run_files"

    def __init__(self, run_dir: RunDir, config: RunConfig, data: RunData, context: int):
        self.run_dir, self.config, self.data, self.context = run_dir, config, data, context
        self.written = False

    def on_checkpoint(self, trainer: Trainer) -> None:
        if not self.written and trainer.parallel.is_main:
            self.run_dir.write_config(self.config, self.context)
            self.run_dir.save_tokenizer(self.data.tokenizer)
        self.written = True


def _fit(trainer: Trainer, run_dir: RunDir) -> bool:
    """trainer.fit() with Ctrl-C and SIGTERM turned into a checkpoint and a clean stop; True if interrupted.
    A diverged run writes its findings before the error goes up."""
    interrupted: list[int] = []

    def on_signal(signum, _frame):
        if interrupted:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        interrupted.append(signum)
        trainer.interrupt()

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if in_main_thread else {}
    try:
        trainer.fit()
    except TrainingDiverged:
        if trainer.parallel.is_main:
            write_inspection(run_dir.path, trainer)
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return bool(interrupted)


def split_nll(trainer: Trainer, splits: dict) -> dict[str, float]:
    """NLL of the trained model on every non-empty split: exact for val and test, the training split capped
    at train.eval_max_tokens (a large corpus' train split would cost more than the run)."""
    return {name: mean_nll(trainer.model, ds, device=trainer.device,
                           max_tokens=trainer.config.eval_max_tokens if name == "train" else None)[0]
            for name, ds in splits.items() if len(ds)}


def _finished_run(run_dir: RunDir, config: RunConfig, data: RunData, trainer: Trainer, parallel: Parallel,
                  wall_seconds: float) -> Run:
    """summary.json and the inspector's findings (rank 0), then the run as the folder now holds it."""
    fsdp = parallel.mode == "fsdp" and parallel.world_size > 1
    if trainer.interrupted or not parallel.is_main:
        if not trainer.interrupted and fsdp:
            split_nll(trainer, data.splits)  # FSDP's forward is collective: take part in rank 0's evaluation
        return Run(run_dir, config, data.tokenizer, trainer.model, trainer.step, trainer=trainer)
    summary = {
        "model": config.model_name,
        "parameters": count_parameters(trainer.model),
        "steps": trainer.step,
        "planned_steps": trainer.config.max_steps,  # after the time budget's fitting, if any
        "train_seconds": round(trainer.train_seconds, 3),
        "wall_seconds": round(wall_seconds, 3),
        "tokens_per_s": round(trainer.tokens_seen / max(trainer.train_seconds, 1e-9)),
        "nonfinite_steps": trainer.nonfinite_steps,
        "nll": split_nll(trainer, data.splits),
    }
    run_dir.write_json(SUMMARY_FILE, summary)
    write_inspection(run_dir.path, trainer)
    run = load(run_dir)
    run.trainer = trainer
    return run

