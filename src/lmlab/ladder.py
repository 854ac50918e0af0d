"""The ladder: train every registered rung on one data set, each within a time budget, each in its own run
directory, then compare them in one table and one plot.

All rungs share one split and one tokenizer (prepared once), so their NLLs are comparable. Each rung keeps
its own training defaults from the registry. When a rung's registered `max_steps` would not fit in the
budget, the ladder times a few of its steps and shortens `max_steps` so the learning-rate schedule still
decays to its end within the budget, instead of being cut off at a high learning rate. It never adds
steps: the registered counts suit the names data, and more epochs overfit the small recurrent models
(measured on names.txt: GRU test 2.027 after 10,243 steps against 2.002 after its 4,000). The budget stays
a hard cap on training time.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lmlab.compare import compare_runs, format_table, plot_val_curves, to_json
from lmlab.config import TrainConfig
from lmlab.errors import CheckpointError, ConfigError
from lmlab.models import REGISTRY, count_parameters
from lmlab.training.checkpoint import atomic_write_text
from lmlab.training.run import build_model, prepare_data, resolve_config, write_run_files, write_summary
from lmlab.training.trainer import Trainer, build_optimizer, resolve_device

log = logging.getLogger(__name__)

TABLE_FILE, JSON_FILE, PLOT_FILE = "comparison.txt", "comparison.json", "val_curves.png"

# Model settings the ladder uses over a rung's config defaults. Held-out text holds pairs never seen in
# training, and one of them makes an unsmoothed count's NLL infinite: the bottom rung is the notes' counted
# bigram with add-one smoothing (2.4544 vs 2.4541 unsmoothed on all of names.txt).
RUNG_MODEL_VALUES: dict[str, dict[str, Any]] = {"ngram": {"n": 2, "alpha": 1.0}}


# Share of the budget the fitted schedule plans to use: the rest covers evaluations, checkpoints and noise
# in the timing on a shared machine.
PLANNED_SHARE = 0.85


def seconds_per_step(model: torch.nn.Module, dataset, config: TrainConfig, steps: int = 6) -> float:
    """Time optimizer steps on a throwaway copy of the model, so the real run starts untouched."""
    device = resolve_device(config.device)
    probe = copy.deepcopy(model).to(device).train()
    optimizer = build_optimizer(probe, config)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        input_ids, labels = dataset.sample_batch(config.batch_size, generator)
        probe(input_ids.to(device), labels=labels.to(device)).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # the first step pays for lazy initialisation
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def fit_steps_to_budget(train: TrainConfig, step_seconds: float, budget: float) -> TrainConfig:
    """max_steps that fit in the budget at the measured speed (never more than the config's own); warm-up
    at most a tenth of them."""
    max_steps = max(1, min(train.max_steps, int(PLANNED_SHARE * budget / max(step_seconds, 1e-9))))
    return dataclasses.replace(train, max_steps=max_steps, warmup_steps=min(train.warmup_steps, max_steps // 10),
                               eval_interval=min(train.eval_interval, max(max_steps // 10, 1)))


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
    on_rung_end: Callable[[str, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train each rung (default_rungs() unless `models` names others) into out_dir/<model>; write the comparison table
    (text and JSON) and the validation-curve plot into out_dir; return the comparison rows."""
    names = list(models) if models else default_rungs()
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ConfigError(f"unknown model {unknown[0]!r}; choose from {', '.join(REGISTRY)}")
    if budget <= 0:
        raise ConfigError(f"--budget must be positive seconds, got {budget}")
    out_dir = Path(out_dir)
    taken = [n for n in names if (out_dir / n / "config.json").exists()]
    if taken and not force:
        raise CheckpointError(f"{out_dir / taken[0]} already holds a run; pass --force to train the ladder again")

    data_values = {"source": source} | ({"mode": mode} if mode else {})
    configs = {n: resolve_config({"data": data_values, "model": {"name": n, **RUNG_MODEL_VALUES.get(n, {})},
                                  "train": {"time_budget": budget, "seed": seed, "device": device}})
               for n in names}
    first = configs[names[0]]
    data = prepare_data(first.data)  # one split and one tokenizer for every rung
    block_size = max(ds.block_size for ds in data.splits.values())
    run_dirs = []
    for name in names:
        config = configs[name]
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, mode=data.mode))
        run_dir = out_dir / name
        if run_dir.exists():
            for stale in ("config.json", "model.safetensors", "trainer_state.pt", "metrics.jsonl", "summary.json"):
                (run_dir / stale).unlink(missing_ok=True)
        started = time.perf_counter()
        model = build_model(config, data.tokenizer, block_size)
        log.info("ladder: %s, %s parameters, budget %g s", name, f"{count_parameters(model):,}", budget)
        if fit_schedule and not getattr(model, "counted", False):
            step_seconds = seconds_per_step(model, data.splits["train"], config.train)
            config = dataclasses.replace(config, train=fit_steps_to_budget(config.train, step_seconds, budget))
            log.info("ladder: %s at %.1f ms/step: %d steps in %g s", name, 1000 * step_seconds,
                     config.train.max_steps, budget)
            started = time.perf_counter()
        write_run_files(run_dir, config, data.tokenizer, block_size)
        trainer = Trainer(model, data.splits["train"], data.splits["val"], config.train, run_dir=run_dir)
        trainer.fit()
        summary = write_summary(run_dir, config.model_name, data.splits, trainer,
                                wall_seconds=round(time.perf_counter() - started, 3))
        run_dirs.append(run_dir)
        if on_rung_end is not None:
            on_rung_end(name, summary)

    rows = compare_runs(run_dirs)
    atomic_write_text(out_dir / TABLE_FILE, format_table(rows))
    atomic_write_text(out_dir / JSON_FILE, to_json(rows))
    plot_val_curves(rows, out_dir / PLOT_FILE)
    return rows
