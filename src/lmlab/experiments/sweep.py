"""`lmlab sweep`: train one config over many values, each trial an ordinary seed group (experiments/seeds.py)
inside the sweep folder, the search and its bookkeeping Optuna's.

    lmlab sweep --set train.lr=1e-3,3e-3,1e-2 --seeds 3 --model mlp --max-steps 300 --out runs/lr

The folder holds `sweep.json` (the plan), `study.db` (the Optuna study, unless --storage names another),
`trial-NNNN/seed-S/` (the runs) and, when the study is done, `results.txt`/`results.json` (the table),
`sweep.png` (the metric against each swept value) and `best.toml` (the best trial's config, for
`lmlab train --config`).

Resuming: a finished trial is kept in the study. A trial that was running when its process was killed
stops sending Optuna's heartbeat; once the grace period has passed the next worker marks it failed and
Optuna's retry callback queues its values again, and the retry trains in the same trial folder, keeping the
seeds that had finished and training the rest from their start. So the same command, run again, ends with
the table an uninterrupted sweep would have printed (trials train with one thread: bitwise reproducible).
Several workers (`--workers N` processes, or several machines on one `--storage` URL) share the study: a
grid is queued once, whole, when the study is created, and each queued trial is taken by one worker only.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmlab.config import parse_budget
from lmlab.errors import ConfigError, LmlabError, check_count
from lmlab.experiments.seeds import train_seeds
from lmlab.experiments.space import Axis, as_layers, grid_points
from lmlab.files import atomic_write_text, read_json_file
from lmlab.run.config import exact_values, merge_layers, resolve_config

log = logging.getLogger(__name__)

PLAN_FILE, STUDY_FILE = "sweep.json", "study.db"
TABLE_FILE, JSON_FILE, PLOT_FILE, BEST_FILE = "results.txt", "results.json", "sweep.png", "best.toml"
STUDY_NAME = "lmlab-sweep"
SEARCHES = ("grid", "random", "tpe")
MAX_TRIALS = 10_000  # each trial is a run per seed
MAX_WORKERS = 256  # processes on one machine
EQUAL = ("steps", "tokens", "time")
# The metric a sweep minimises: (summary.json's table, split).
METRICS = {"val_nll": ("nll", "val"), "test_nll": ("nll", "test"), "val_bpb": ("bits_per_byte", "val"),
           "test_bpb": ("bits_per_byte", "test")}
# A worker writes a heartbeat for its trial this often; a trial whose heartbeat is older than the grace
# period was killed, and is queued again.
HEARTBEAT_SECONDS, GRACE_SECONDS = 1, 4
# An equal-time sweep trains for as many steps as the budget allows (the trainer fixes its decay by the clock).
UNBOUNDED_STEPS = 10_000_000


@dataclass(frozen=True, kw_only=True, slots=True)
class SweepPlan:
    """What a sweep trains: every trial is `base` with its values of `axes`, trained once per seed."""

    base: dict[str, Any]  # config layers without the swept keys
    axes: tuple[Axis, ...]
    search: str = "grid"
    trials: int = 0  # random and tpe: trials in all; a grid has one per point
    seeds: tuple[int, ...] = (1337,)
    metric: str = "val_nll"
    equal: str = "steps"  # what stays equal while the batch size varies: steps, tokens (steps x batch), or time
    grid_points: int = 4  # values of a range in a grid
    sampler_seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", exact_values(self.base))  # its JSON (plan file, workers) keeps the types
        if not self.axes:
            raise ConfigError("a sweep needs at least one swept value: --set KEY=A,B,C or --set KEY=LOW:HIGH[:log]")
        if self.search not in SEARCHES:
            raise ConfigError(f"--search must be one of {', '.join(SEARCHES)}, got {self.search!r}")
        if self.search != "grid" and self.trials < 1:
            raise ConfigError(f"--search {self.search} needs --trials N (N >= 1)")
        if self.search != "grid":
            check_count(self.trials, "--trials", MAX_TRIALS)
        if self.metric not in METRICS:
            raise ConfigError(f"--metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.equal not in EQUAL:
            raise ConfigError(f"--equal must be one of {', '.join(EQUAL)}, got {self.equal!r}")
        check_count(self.grid_points, "--grid-points", MAX_TRIALS)
        if self.search == "grid":  # counted before the grid is listed: a few axes of many points multiply
            check_count(math.prod(len(a.choices) or self.grid_points for a in self.axes), "the grid's trials",
                        MAX_TRIALS)
        budget = parse_budget(resolve_config(self.base).train.budget)
        if self.equal == "time" and (budget is None or not budget.is_time):
            raise ConfigError("--equal time needs --budget SECONDSs: the time every trial trains for")
        if budget is not None and budget.is_time and self.equal != "time":
            raise ConfigError(f"a time budget ({budget}) gives each trial the steps the machine's speed allows: "
                              "say --equal time to mean it, or give a work budget (tokens, flops, steps)")

    @property
    def points(self) -> list[dict[str, Any]]:
        return grid_points(list(self.axes), self.grid_points)

    @property
    def num_trials(self) -> int:
        return len(self.points) if self.search == "grid" else self.trials

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SweepPlan:
        axes = tuple(Axis(**{**a, "choices": tuple(a["choices"])}) for a in values["axes"])
        return cls(**{**values, "axes": axes, "seeds": tuple(values["seeds"])})


def trial_config(plan: SweepPlan, params: dict[str, Any]) -> dict[str, Any]:
    """The config layers of the trial with `params`: the base, its values, one thread (bitwise reproducible
    and fair to parallel workers, unless the base names train.threads), and the steps of an equal budget."""
    layers = merge_layers({"train": {"threads": 1}}, plan.base, as_layers(params))
    reference, this = resolve_config(plan.base).train, resolve_config(layers).train
    if plan.equal == "steps" or (reference.budget and plan.equal != "time"):
        return layers  # a work budget gives every trial the same work, whatever it varies
    if plan.equal == "time":
        return merge_layers(layers, {"train": {"max_steps": UNBOUNDED_STEPS}})
    sequences = reference.max_steps * reference.batch_size * reference.grad_accum_steps
    steps = max(1, round(sequences / (this.batch_size * this.grad_accum_steps)))
    return merge_layers(layers, {"train": {"max_steps": steps}})


def metric_of(summary: dict[str, Any], metric: str) -> float | None:
    table, split = METRICS[metric]
    value = (summary.get(table) or {}).get(split)
    return float(value) if isinstance(value, (int, float)) else None


# ----------------------------------------------------------------------------------------------------------
# The study


def storage_for(url: str):
    import warnings

    import optuna

    # The heartbeat that finds killed trials is marked experimental; it is what resuming rests on.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(
        url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS, engine_kwargs=engine,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback())


def _sampler(plan: SweepPlan, offset: int):
    """The search's sampler, seeded from the plan and the trials so far: a restarted worker does not draw the
    values its previous life drew. A grid is queued whole, so its sampler is never asked."""
    import optuna

    seed = plan.sampler_seed + offset
    if plan.search == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, plan.trials // 3)))
    return optuna.samplers.RandomSampler(seed=seed)


def _open_study(storage_url: str, plan: SweepPlan, offset: int = 0):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=STUDY_NAME, storage=storage_for(storage_url), sampler=_sampler(plan, offset))


def create_study(storage_url: str, plan: SweepPlan):
    """The sweep's study, created (and a grid queued) on first use; ConfigError if it holds another plan."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage_for(storage_url), direction="minimize",
                                load_if_exists=True)
    saved = study.user_attrs.get("plan")
    if saved is None:
        study.set_user_attr("plan", plan.to_dict())
        if plan.search == "grid" and not study.get_trials(deepcopy=False):
            for i, params in enumerate(plan.points):
                study.enqueue_trial(params, user_attrs={"grid": True, "folder": f"trial-{i:04d}"})
    elif saved != plan.to_dict():
        raise ConfigError(f"the study in {storage_url} belongs to another sweep (other values, seeds or search); "
                          "give another --out or --storage, or --force to start over")
    return study


def _done(trials, plan: SweepPlan) -> tuple[bool, int]:
    """(whether no more trials need starting, how many are running)."""
    from optuna.trial import TrialState

    states = collections.Counter(t.state for t in trials)
    if states[TrialState.WAITING]:
        return False, states[TrialState.RUNNING]
    if plan.search == "grid":
        return True, states[TrialState.RUNNING]
    errors = sum(t.state == TrialState.FAIL and "error" in t.user_attrs for t in trials)
    return states[TrialState.COMPLETE] + states[TrialState.RUNNING] + errors >= plan.trials, states[TrialState.RUNNING]


def work(out: str | Path, storage_url: str, plan: SweepPlan,
         on_trial_end: Callable[[dict[str, Any]], None] | None = None) -> None:
    """One worker: take queued or new trials and train them until the study needs no more; then wait for
    the running ones (a killed worker's trial is queued again after the grace period, and taken here)."""
    import optuna

    out = Path(out)
    while True:
        study = _open_study(storage_url, plan)
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        done, running = _done(trials, plan)
        if done and not running:
            return
        if done:
            time.sleep(HEARTBEAT_SECONDS)
            continue
        study = _open_study(storage_url, plan, offset=len(trials))
        study.optimize(lambda trial: _objective(trial, plan, out, on_trial_end), n_trials=1, catch=(LmlabError,))


def _objective(trial, plan: SweepPlan, out: Path, on_trial_end) -> float:
    import optuna

    if plan.search == "grid" and not trial.user_attrs.get("grid"):
        raise optuna.TrialPruned()  # another worker took the last queued point first: nothing left to train
    params = {axis.key: axis.suggest(trial) for axis in plan.axes}
    folder = trial.user_attrs.get("folder") or f"trial-{trial.number:04d}"
    trial.set_user_attr("folder", folder)
    try:
        runs = train_seeds(trial_config(plan, params), out=out / folder, seeds=plan.seeds, inspect=False)
    except LmlabError as err:  # a diverged run, or values the config rejects: a result, shown in the table
        trial.set_user_attr("error", str(err).splitlines()[0] if str(err) else type(err).__name__)
        raise
    if any(run.interrupted for run in runs):  # Ctrl-C: queue the trial again, in its own folder, and stop
        trial.study.enqueue_trial(params, user_attrs=dict(trial.user_attrs))
        raise KeyboardInterrupt
    values = [metric_of(run.summary, plan.metric) for run in runs]
    if any(v is None for v in values):
        trial.set_user_attr("error", f"the runs report no {plan.metric}")
        raise ConfigError(f"{out / folder}: no {plan.metric} (is that split empty?)")
    trial.set_user_attr("per_seed", values)
    bpb = [metric_of(run.summary, "val_bpb") for run in runs]
    trial.set_user_attr("val_bpb", math.fsum(bpb) / len(bpb) if all(b is not None for b in bpb) else None)
    mean = math.fsum(values) / len(values)
    if on_trial_end is not None:
        on_trial_end({"trial": trial.number, "folder": folder, "params": params, "value": mean})
    return mean


def _worker_process(out: str, storage_url: str, plan_values: dict[str, Any]) -> None:
    """A --workers process: one thread, quiet logging, the same loop."""
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    work(out, storage_url, SweepPlan.from_dict(plan_values))


def run_sweep(plan: SweepPlan, out: str | Path, *, storage: str | None = None, workers: int = 1,
              force: bool = False, on_trial_end: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the sweep in `out` and write its table, plot and best config; return the report."""
    check_count(workers, "--workers", MAX_WORKERS)
    try:  # the study is Optuna's: without it, one line before anything is written
        import optuna  # noqa: F401
    except ImportError:
        raise ConfigError("lmlab sweep keeps its study in Optuna: pip install 'lmlab[sweep]'") from None
    out = Path(out)
    plan_path = out / PLAN_FILE
    if plan_path.is_file() and force:
        _clear(out)
    elif plan_path.is_file():
        try:
            saved = read_json_file(plan_path)
        except LmlabError:
            saved = None
        if saved != plan.to_dict():
            raise ConfigError(f"{out} holds another sweep (other values, seeds or search); give another --out, or "
                              "--force to start over")
    elif out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty and holds no sweep; give another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan_path, json.dumps(plan.to_dict(), indent=1) + "\n")
    storage_url = storage or f"sqlite:///{(out / STUDY_FILE).resolve()}"
    create_study(storage_url, plan)
    if workers == 1:
        work(out, storage_url, plan, on_trial_end)
    else:
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked torch threads
        processes = [context.Process(target=_worker_process, args=(str(out), storage_url, plan.to_dict()))
                     for _ in range(workers)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        failed = [p.exitcode for p in processes if p.exitcode]
        if failed:
            raise LmlabError(f"{len(failed)} of {workers} workers stopped with an error (exit {failed[0]}); run the "
                             "same command again to finish the sweep")
    from lmlab.experiments.sweep_report import write_report

    return write_report(out, _open_study(storage_url, plan), plan)


def _clear(out: Path) -> None:
    """What a sweep wrote in `out` (its plan, study, trials and results), for --force; nothing else."""
    for name in (PLAN_FILE, STUDY_FILE, TABLE_FILE, JSON_FILE, PLOT_FILE, BEST_FILE):
        (out / name).unlink(missing_ok=True)
    for folder in out.glob("trial-*"):
        if folder.is_dir():
            shutil.rmtree(folder)

