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

from lmlab.config import parse_budget
from lmlab.errors import CheckpointError, ConfigError, TrainingDiverged
from lmlab.evaluate import evaluate_run
from lmlab.export import export_run
from lmlab.files import claim_output_folder
from lmlab.inspector import Inspector, find_problems, load_findings
from lmlab.inspector.report import (
    INSPECTOR_OFF_BY_CALLER,
    INSPECTOR_OFF_FSDP,
    INSPECTOR_ON,
    reinspect,
    write_inspection,
)
from lmlab.models import count_parameters
from lmlab.notebook import Findings, LiveCurves, Report, in_notebook, run_html
from lmlab.run.config import RunConfig, build_model
from lmlab.run.data import RunData
from lmlab.run.folder import (
    FINDINGS_FILE,
    REPORT_FILE,
    SUMMARY_FILE,
    LoadedRun,
    RunDir,
    default_run_dir,
    is_run_or_its_start,
    load_run,
)
from lmlab.run.plan import Resolved, RunPlan, plan_run, resolve_run
from lmlab.sample import SampleOptions, sample_texts
from lmlab.training.callbacks import Callback, EarlyStopping, callbacks_for
from lmlab.training.distributed import Parallel
from lmlab.training.loggers import loggers_for
from lmlab.training.lr_finder import LRFindResult, lr_find
from lmlab.training.performance import flops_per_token, use_fitting_threads
from lmlab.training.scoring import (
    batch_bytes,
    batch_rows,
    bits_per_byte,
    evaluation_batches,
    mean_nll,
    score_split,
    scored_bytes,
    token_bytes,
)
from lmlab.training.trainer import Trainer

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
        return Findings(load_findings(path)) if path.is_file() else None

    @property
    def inspected(self) -> bool:
        """Whether an inspector watched this training (after `lmlab.train`)."""
        return self.trainer is not None and any(isinstance(c, Inspector) for c in self.trainer.callbacks)

    @property
    def stopped_early(self) -> EarlyStopping | None:
        """The early stopping that ended this training (its stopped_step, patience, best_step), else None."""
        callbacks = self.trainer.callbacks if self.trainer is not None else []
        return next((c for c in callbacks if isinstance(c, EarlyStopping) and c.stopped_step), None)

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
    out: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
    callbacks: Sequence[Callback] = (),
    inspect: bool | int = True,
    data: RunData | None = None,
    parallel: Parallel | None = None,
    torchrun: bool = False,
) -> Run:
    """Train a model into the run folder `out` and return the finished `Run`.

    `config` holds any of the data, model and train sections (missing values take their defaults); with
    `resume=True` it is layered over the run's own config, and only train.* may change. `out` defaults to a
    new runs/MODEL-DATA folder. `force` starts over in a folder that holds a run. `inspect` turns the inspector
    on (an int: sample every that many steps). `data` reuses splits prepared for this config (the ladder
    shares one split between rungs). `torchrun` joins the process group torchrun describes, for the train
    section's device and parallel mode (the `lmlab train` command); `parallel` passes one already joined.
    Nothing in `out` is changed until every input has been checked; the folder is locked while training.
    On Ctrl-C or SIGTERM the trainer saves a checkpoint and the Run comes back with `interrupted=True`."""
    config = config if config is not None else {}
    if resume and out is None:
        raise ConfigError("--resume needs --out RUN_DIR, the run to continue")
    if resume:
        RunDir(out).require_checkpoint()  # before the lock creates the folder
    # The one resolution (a bad value fails before the folder is touched); the rest reads the plan.
    resolved = resolve_run(config, RunDir(out) if resume else None)
    run_dir = RunDir(out if out is not None else default_run_dir(resolved.config.model_name,
                                                                  resolved.config.data.source))
    joined = parallel is None and torchrun
    if parallel is None:
        train_config = resolved.config.train
        parallel = Parallel.from_environment(train_config.device, train_config.parallel) if torchrun else Parallel()
    try:
        run = _train(resolved, run_dir, force, callbacks, inspect, data, parallel)
        # No rank leaves the group while another may still be in a collective with it (FSDP's last gathers):
        # a gloo rank that left early was seen to abort at exit ("terminate called without an active
        # exception"). Only on success: after an error on one rank the others must not wait here.
        if joined:
            parallel.barrier()
        return run
    finally:
        if joined:
            parallel.close()


def _train(resolved: Resolved, run_dir: RunDir, force: bool, callbacks: Sequence[Callback], inspect: bool | int,
           data: RunData | None, parallel: Parallel) -> Run:
    resume = resolved.resume
    claim_output_folder(run_dir.path, "a new run", may_replace=is_run_or_its_start)
    created = not run_dir.path.exists()
    started = time.perf_counter()
    keep_folder = False  # a folder this call created goes again if it fails before its first checkpoint
    if parallel.is_main:
        run_dir.lock("lmlab train")
    try:
        if not resume and run_dir.holds_run() and not force:
            raise CheckpointError(f"{run_dir} already holds a run; pass --resume to continue it or --force to "
                                  "start over")
        plan = plan_run(resolved, run_dir.load_tokenizer() if resume else None, data, parallel.world_size)
        config, data, context = plan.config, plan.data, plan.context
        model = build_model(config, data.tokenizer, context, training=True)
        chosen = _callbacks(config, data, run_dir, inspect, callbacks, parallel)
        log.info("%s: %s parameters; data %s (%s mode, vocab %d, %s train tokens) -> %s", config.model_name,
                 f"{count_parameters(model):,}", config.data.source, data.mode, data.tokenizer.vocab_size,
                 f"{data.splits['train'].num_predictions:,}", run_dir)
        run_files = _RunFiles(run_dir, config, data, context)
        trainer = Trainer(model, data.splits["train"], data.splits["val"], config.train, run_dir=run_dir,
                          parallel=parallel, callbacks=[*chosen, run_files])
        if resume:  # a checkpoint that cannot be resumed leaves the run as it was
            trainer.load_checkpoint(run_dir)
            if trainer.step > config.train.max_steps:
                raise CheckpointError(f"{run_dir} is at step {trainer.step}, past --max-steps "
                                      f"{config.train.max_steps}; resume to a later step (or start over with "
                                      "--force)")
            log.info("resuming %s at step %d", run_dir, trainer.step)
        parallel.barrier()  # every rank has read the folder before rank 0 changes it
        if parallel.is_main and not resume:
            run_dir.clear()  # a previous run's files (with --force) or a killed start's leftovers
            run_files.write()  # before the first checkpoint: a kill right after it leaves a run that resumes
        interrupted = _fit(trainer, run_dir)
        if not trainer.interrupted and parallel.is_main:
            config = _as_ran(config, trainer)
            run_dir.write_config(config, context)
        keep_folder = True
    except TrainingDiverged as err:
        keep_folder = True  # its findings say what went wrong
        findings = run_dir.path / FINDINGS_FILE
        if parallel.is_main and findings.is_file():
            err.findings = load_findings(findings)
        raise
    finally:
        run_dir.unlock()
        if not keep_folder and created and parallel.is_main and not run_dir.has_checkpoint():
            shutil.rmtree(run_dir.path, ignore_errors=True)  # it holds only what this failed command wrote
    run = _finished_run(run_dir, config, plan, trainer, parallel, time.perf_counter() - started)
    run.interrupted = interrupted
    return run


def find_lr(config: dict[str, Any] | RunConfig | None = None, **options: Any) -> LRFindResult:
    """The learning-rate range test (`lmlab lr-find`) on the model `train` would build for this config: the
    same resolution, data and fitted batch. `options`: start_lr, end_lr, num_iter, rule."""
    resolved = resolve_run(config if config is not None else {})
    if resolved.config.train.threads == "auto":
        use_fitting_threads()
    plan = plan_run(resolved)
    model = build_model(plan.config, plan.data.tokenizer, plan.context, training=True)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"model {plan.config.model_name!r} is counted, not trained by gradient steps: no LR "
                          "to find")
    return lr_find(model, plan.data.splits["train"], plan.config.train, **options)


def _callbacks(config: RunConfig, data: RunData, run_dir: RunDir, inspect: bool | int, extra: Sequence[Callback],
               parallel: Parallel) -> list:
    """The inspector first (unless off), the loggers, the callbacks train.* names, then the caller's. The
    inspector watches on rank 0 only, and not under FSDP (its statistics would read one rank's shards);
    loggers and the best-weights keeper write on rank 0 only. A callback passed here (the Python API) is not
    in config.json: a resume needs it passed again; one train.* names is kept by the config."""
    train = config.train
    watch = [] if inspect is False or parallel.sharded or not parallel.is_main else \
        [Inspector(every=None if inspect is True else int(inspect))]
    # Loggers (train.log) after the inspector: each sampled step goes out complete, with its findings at the end.
    val = data.splits.get("val")

    def val_bytes_per_token() -> float | None:  # one pass over the val split, only when a logger is on
        tokens = val.num_predictions if val is not None else 0
        return scored_bytes(val, token_bytes(data.tokenizer)) / tokens if tokens else None

    loggers = loggers_for(train, run_dir, config.to_dict(), findings=find_problems,
                          val_bytes_per_token=val_bytes_per_token)
    named = callbacks_for(train, writes_files=parallel.is_main, given=extra)
    # In Jupyter the curves redraw in the cell; a terminal shows the progress bar and log lines only.
    live = [LiveCurves(config.model_name)] if in_notebook() and parallel.is_main else []
    return [*watch, *loggers, *named, *live, *extra]


class _RunFiles(Callback):
    """Writes config.json and tokenizer.json: a new run before its first checkpoint (a kill just after that
    checkpoint then leaves a run that resumes, and one before it a run that says it has no checkpoint yet);
    a resumed run once its first checkpoint is written, so a resume that dies before one leaves the old files
    describing the checkpoint beside them."""

    name = "run_files"

    def __init__(self, run_dir: RunDir, config: RunConfig, data: RunData, context: int):
        self.run_dir, self.config, self.data, self.context = run_dir, config, data, context
        self.written = False

    def write(self) -> None:
        self.run_dir.write_config(self.config, self.context)
        self.run_dir.save_tokenizer(self.data.tokenizer)
        self.written = True

    def on_checkpoint(self, trainer: Trainer) -> None:
        if not self.written and trainer.parallel.is_main:
            self.write()
        self.written = True


# What stops a run with a checkpoint: Ctrl-C, kill (SIGTERM), and a closed terminal or ssh session (SIGHUP,
# which Windows lacks), which would otherwise end the process at once and lose the steps since the last one.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def _fit(trainer: Trainer, run_dir: RunDir) -> bool:
    """trainer.fit() with Ctrl-C, SIGTERM and SIGHUP turned into a checkpoint and a clean stop; True if
    interrupted.
    A diverged run writes its findings before the error goes up."""
    interrupted: list[int] = []

    def on_signal(signum, _frame):
        if interrupted:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        interrupted.append(signum)
        trainer.interrupt()

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS} if in_main_thread else {}
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


def _budget_summary(plan: RunPlan) -> dict[str, Any] | None:
    """What the run's budget was and what it bought, for summary.json (None without a budget)."""
    work = plan.work
    if work is not None:
        return {"requested": str(work.budget), "unit": work.budget.unit, "steps": work.steps,
                "tokens_per_step": round(work.tokens_per_step, 2), "flops_per_token": round(work.flops_per_token),
                "eval_flops_share": round(work.eval_flops / work.flops, 4)}
    budget = parse_budget(plan.config.train.budget)
    return {"requested": str(budget), "unit": budget.unit} if budget is not None else None


@dataclass(frozen=True, slots=True)
class SplitScores:
    """The trained model's scores on every non-empty split: NLL per token, bits per byte, and the standard
    error of each NLL that is a sample's (a split over train.final_eval_max_tokens tokens)."""

    nll: dict[str, float]
    bits_per_byte: dict[str, float | None]
    stderr: dict[str, float]


def split_scores(trainer: Trainer, data: RunData) -> SplitScores:
    """The final scores of every non-empty split: val and test exact up to train.final_eval_max_tokens
    (a fixed sample of that many with its standard error beyond), val taken from the trainer's final
    evaluation when the model still holds the weights it scored; the training split capped at
    train.eval_max_tokens, its first tokens (a large corpus' train split would cost more than the run). Bits
    per byte count the UTF-8 bytes of the scored tokens' text (training/scoring.py)."""
    nll, bpb, stderr = {}, {}, {}
    byte_lengths = token_bytes(data.tokenizer)
    for name, ds in data.splits.items():
        if not len(ds):
            continue
        if name == "train":
            cap = trainer.config.eval_max_tokens
            nll[name], tokens = mean_nll(trainer.model, ds, device=trainer.device, max_tokens=cap)
            bpb[name] = bits_per_byte(nll[name], tokens, scored_bytes(ds, byte_lengths, max_tokens=cap))
            continue
        cap = trainer.final_eval_cap(ds)
        score = trainer.final_val_score() if name == "val" else None
        if score is not None:  # the same batches again, without the model: only their bytes are new
            batches = evaluation_batches(ds, batch_rows(trainer.model, ds, trainer.config.batch_size * 4), cap)
            score = dataclasses.replace(score, num_bytes=batch_bytes(batches, byte_lengths))
        else:
            score = score_split(trainer.model, ds, max_tokens=cap, batch_size=trainer.config.batch_size * 4,
                                device=trainer.device, byte_lengths=byte_lengths)
        nll[name] = score.nll
        bpb[name] = bits_per_byte(score.nll, score.tokens, score.num_bytes)
        if not score.exact:
            stderr[name] = score.stderr
    return SplitScores(nll, bpb, stderr)


def _as_ran(config: RunConfig, trainer: Trainer) -> RunConfig:
    """The config of a finished run as it ran: a time budget's schedule written out as plain steps (where
    the decay started, how many steps it had, where the clock stopped the run), so running that config.json
    again, on any machine, reproduces the run without a clock."""
    budget = parse_budget(config.train.budget)
    if budget is None or not budget.is_time:
        return config
    ran = {**trainer.schedule.config_values(), "max_steps": trainer.step}
    return dataclasses.replace(config, train=dataclasses.replace(config.train, budget="", **ran))


def _finished_run(run_dir: RunDir, config: RunConfig, plan: RunPlan, trainer: Trainer, parallel: Parallel,
                  wall_seconds: float) -> Run:
    """summary.json and the inspector's findings (rank 0), then the run as the folder now holds it."""
    data = plan.data
    if trainer.interrupted or not parallel.is_main:
        if not trainer.interrupted and parallel.sharded:
            split_scores(trainer, data)  # FSDP's forward is collective: take part in rank 0's evaluation
        return Run(run_dir, config, data.tokenizer, trainer.model, trainer.step, trainer=trainer)
    scores = split_scores(trainer, data)
    watched = any(isinstance(c, Inspector) for c in trainer.callbacks)
    summary = {
        "model": config.model_name,
        "parameters": count_parameters(trainer.model),
        "steps": trainer.step,
        "planned_steps": trainer.schedule.max_steps,  # after a time budget fixed its decay, if it did
        "budget": _budget_summary(plan),
        "tokens": trainer.tokens_seen,
        "flops": float(f"{trainer.tokens_seen * flops_per_token(trainer.model, plan.context):.4g}"),
        "threads": trainer.threads,
        "train_seconds": round(trainer.train_seconds, 3),
        "wall_seconds": round(wall_seconds, 3),
        "tokens_per_s": round(trainer.tokens_seen / max(trainer.train_seconds, 1e-9)),
        "nonfinite_steps": trainer.nonfinite_steps,
        "nll": scores.nll,
        "bits_per_byte": scores.bits_per_byte,
        **({"nll_stderr": scores.stderr} if scores.stderr else {}),  # splits scored on a sample only
        # Who turned the inspector off, for `lmlab inspect` to say: FSDP (_callbacks), else the caller
        # (inspect=False: --no-inspect, the ladder's rungs).
        "inspector": INSPECTOR_ON if watched else INSPECTOR_OFF_FSDP if parallel.sharded else INSPECTOR_OFF_BY_CALLER,
    }
    run_dir.write_json(SUMMARY_FILE, summary)
    write_inspection(run_dir.path, trainer)
    run = load(run_dir)
    run.trainer = trainer
    return run

