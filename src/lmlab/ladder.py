"""The ladder: train every registered rung on one data set, each within a time budget, each in its own run
directory, then compare them in one table and one plot.

All rungs share one split and one tokenizer (prepared once), so their NLLs are comparable. Each rung keeps
its own training defaults from the registry (its batch, and context, fitted to a large vocabulary as in
`lmlab train`: run/fit_defaults.py) and trains through the same pipeline as `lmlab train`, with the
budget as `train.time_budget`: when a rung's registered `max_steps` would not fit, the trainer shortens them
from the step times it measures while training (training/budget.py), again when the machine's speed drifts,
so the learning-rate schedule still decays to its end within the budget instead of being cut off at a high
rate. It never plans more than the registered steps: those suit the names data, and more epochs overfit the
small recurrent models (measured on names.txt: GRU test 2.027 after 10,243 steps against 2.002 after its
4,000). The budget stays a hard cap on training time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmlab.compare import compare_runs, format_table, mark_best, plot_val_curves, summarize, to_json
from lmlab.errors import CheckpointError, ConfigError
from lmlab.experiments.groups import is_group
from lmlab.experiments.seeds import train_seeds
from lmlab.files import atomic_write_text, claim_output_folder
from lmlab.models import REGISTRY
from lmlab.notebook import Comparison
from lmlab.run import train
from lmlab.run.config import merge_layers, resolve_config
from lmlab.run.data import prepare_data
from lmlab.run.folder import RunDir

log = logging.getLogger(__name__)

TABLE_FILE, JSON_FILE, PLOT_FILE = "comparison.txt", "comparison.json", "val_curves.png"

# Model settings the ladder uses over a rung's config defaults. Held-out text holds pairs never seen in
# training, and one of them makes an unsmoothed count's NLL infinite: the bottom rung is the notes' counted
# bigram with add-one smoothing (2.4544 vs 2.4541 unsmoothed on all of names.txt).
RUNG_MODEL_VALUES: dict[str, dict[str, Any]] = {"ngram": {"n": 2, "alpha": 1.0}}


def default_rungs() -> list[str]:
    """One rung per architecture: the first registered name of each model class, in registry order (ngram,
    bigram, mlp, wavenet, rnn, gru, lstm, gpt). Other sizes (gpt-mini, gpt2, ...) only when named."""
    seen: set[type] = set()
    rungs = []
    for name, spec in REGISTRY.items():
        if spec.model_cls not in seen:
            seen.add(spec.model_cls)
            rungs.append(name)
    return rungs


def run_ladder(
    source: str,
    out_dir: str | Path,
    *,
    budget: float = 60.0,
    models: list[str] | None = None,
    mode: str | None = None,
    seed: int = 1337,
    device: str = "auto",
    force: bool = False,
    fit_schedule: bool = True,
    overrides: dict[str, Any] | None = None,
    on_rung_end: Callable[[str, dict[str, Any]], None] | None = None,
    seeds: list[int] | None = None,
) -> Comparison:
    """Train each rung (default_rungs() unless `models` names others) into out_dir/<model> through the same
    pipeline as `lmlab train` (lmlab.run.train); write the comparison table (text and JSON) and the
    validation-curve plot into out_dir; return the comparison rows. `overrides` ({section: {key: value}},
    as `--set`) apply to every rung. With `seeds`, each rung is a seed group (experiments/seeds.py): one run
    per seed in out_dir/<model>/seed-<seed>, the table's NLL their mean ± SE and the plot's curves a band.
    The table marks the best rung and those not distinguishable from it."""
    names = list(models) if models else default_rungs()
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ConfigError(f"unknown model {unknown[0]!r}; choose from {', '.join(REGISTRY)}")
    if budget <= 0:
        raise ConfigError(f"--budget must be positive seconds, got {budget}")
    out_dir = claim_output_folder(out_dir, "a ladder", may_replace=_is_ladder_folder)
    taken = [n for n in names if RunDir(out_dir / n).holds_run() or is_group(out_dir / n)]
    if taken and not force:
        raise CheckpointError(f"{out_dir / taken[0]} already holds a run; pass --force to train the ladder again")

    configs = {n: resolve_config(rung_config(source, n, budget=budget, mode=mode, seed=seed, device=device,
                                             fit_schedule=fit_schedule, overrides=overrides)) for n in names}
    data = prepare_data(configs[names[0]].data)  # one split and one tokenizer for every rung
    run_dirs = []
    for name in names:
        log.info("ladder: %s, budget %g s", name, budget)
        if seeds:
            train_seeds(configs[name], out=out_dir / name, seeds=seeds, force=force, inspect=False, data=data)
            run_dirs.append(out_dir / name)
            summary = summarize(out_dir / name)
        else:
            run = train(configs[name], out=out_dir / name, force=force, inspect=False, data=data)
            run_dirs.append(run.run_dir.path)
            summary = run.summary
        if on_rung_end is not None:
            on_rung_end(name, summary)

    rows = compare_runs(run_dirs)
    mark_best(rows)
    atomic_write_text(out_dir / TABLE_FILE, format_table(rows))
    atomic_write_text(out_dir / JSON_FILE, to_json(rows))
    plot_val_curves(rows, out_dir / PLOT_FILE, x="time")  # time-budgeted rungs span the same x
    return rows


def _is_ladder_folder(folder: Path) -> bool:
    """A ladder's own folder: its table, or only runs (a ladder stopped before the table was written)."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return (folder / JSON_FILE).is_file() or all(p.is_dir() and not p.is_symlink() and RunDir(p).holds_run()
                                                  for p in entries)


def rung_config(source: str, name: str, *, budget: float, mode: str | None = None, seed: int = 1337,
                device: str = "auto", fit_schedule: bool = True,
                overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config values of one rung: what `lmlab train` given the same values trains (byte for byte the
    same metrics, where no time budget cuts the run short)."""
    data_values = {"source": source} | ({"mode": mode} if mode else {})
    values = {"data": data_values, "model": {"name": name, **RUNG_MODEL_VALUES.get(name, {})},
              "train": {"time_budget": budget, "seed": seed, "device": device, "fit_schedule": fit_schedule}}
    return merge_layers(values, overrides or {})
