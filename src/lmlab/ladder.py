"""The ladder: train every registered rung on one data set for the same budget of work, each in its own run
directory, then compare them in one table and one plot.

All rungs share one split and one tokenizer (prepared once), so their NLLs are comparable, and one budget
(`--budget`, as `lmlab train` takes it): work (FLOPs or tokens) is the same for every rung and becomes each
rung's step count before it trains, so the same command gives the same table on any machine, idle or busy.
With `size="auto"` (the default) each rung is also sized for the budget: its width scaled so that its
parameters are those the budget trains at TOKENS_PER_PARAMETER tokens each (a FLOPs budget F buys
sqrt(F / (6 r)) parameters trained on r times as many tokens), and its batch cut so it takes at least
MIN_STEPS steps, and every sized rung is regularised alike (no dropout, early stopping that keeps the best
weights). The rungs then differ in architecture, not in how much of the budget they could use or in
settings tuned for another budget. Rungs whose size is their vocabulary's (the bigram's V x V table) keep it
and train at most their registered steps, which already converge. `size="default"` keeps every rung's
registered size, batch and settings.

A rung that does not beat the counted bigram by MIN_GAIN nats gets a line under the table saying how many
tokens it saw for its parameters, and the budget to try. A killed ladder, run again, keeps the finished
rungs, resumes the interrupted one exactly, and writes the table an uninterrupted ladder would.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lmlab.compare import compare_runs, format_table, held_out_split, mark_best, plot_val_curves, summarize, to_json
from lmlab.config import LADDER_BUDGET, Budget, parse_budget
from lmlab.errors import CheckpointError, ConfigError
from lmlab.experiments.groups import is_group
from lmlab.experiments.seeds import train_seeds
from lmlab.files import atomic_write_text, claim_output_folder
from lmlab.models import GPT2_WEIGHT_DECAY, REGISTRY, count_parameters
from lmlab.names import did_you_mean
from lmlab.notebook import Comparison
from lmlab.run import load, train
from lmlab.run.config import build_model, merge_layers, resolve_config
from lmlab.run.data import RunData, context_length, prepare_data
from lmlab.run.folder import SUMMARY_FILE, RunDir, is_run_or_its_start
from lmlab.training.checkpoint.format import read_json

log = logging.getLogger(__name__)

TABLE_FILE, JSON_FILE, PLOT_FILE = "comparison.txt", "comparison.json", "val_curves.png"
LADDER_FILE = "ladder.json"  # what the ladder in a folder was asked for: a rerun of the same one continues it

# Tokens a parameter is trained on at the size a budget buys: Chinchilla's 20, and the registry's defaults,
# tuned on names.txt by measurement, sit at 20-30 (the GPT's 5.5M tokens for 203K parameters, the LSTM's 2.2M
# for 87K; benchmarks/RESULTS.md).
TOKENS_PER_PARAMETER = 20
MIN_STEPS = 1000  # a rung's batch is halved (down to MIN_BATCH) until it takes at least this many steps
MIN_BATCH = 16
MIN_GAIN = 0.1  # nats a trained rung should gain over the counted bigram; less is worth a line under the table
MAX_BEHIND = 0.05  # nats a transformer rung may trail the best rung by before a line under the table says so
# The counted bigram, and the same table learned by gradient descent: at best they tie.
AT_BEST_BIGRAMS = ("ngram", "bigram")
WIDTHS = ("n_embd", "n_hidden")  # the fields the width rule scales, where a rung's config has them
HEAD_SIZE = 16  # a transformer rung's width per attention head (and per layer) in the width rule
EARLY_STOPPING = 3  # evaluations without improvement before a sized rung stops and keeps its best weights

# Model settings the ladder uses over a rung's config defaults. Held-out text holds pairs never seen in
# training, and one of them makes an unsmoothed count's NLL infinite: the bottom rung is the notes' counted
# bigram with add-one smoothing (2.4544 vs 2.4541 unsmoothed on all of names.txt).
RUNG_MODEL_VALUES: dict[str, dict[str, Any]] = {"ngram": {"n": 2, "alpha": 1.0}}


def default_rungs() -> list[str]:
    """One rung per architecture: the first registered name of each model class, in registry order (ngram,
    bigram, mlp, wavenet, rnn, gru, lstm, gpt, llama). Other sizes (gpt-mini, gpt2, ...) only when named."""
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
    budget: str = LADDER_BUDGET,
    size: str = "auto",
    models: list[str] | None = None,
    mode: str | None = None,
    seed: int = 1337,
    device: str = "auto",
    force: bool = False,
    overrides: dict[str, Any] | None = None,
    on_rung_end: Callable[[str, dict[str, Any]], None] | None = None,
    seeds: list[int] | None = None,
) -> Comparison | None:
    """Train each rung (default_rungs() unless `models` names others) into out_dir/<model> through the same
    pipeline as `lmlab train` (lmlab.run.train), for `budget` each, sized for it (`size` "auto") or at their
    registered sizes ("default"); write the comparison table (text and JSON) and the validation-curve plot
    into out_dir; return the comparison rows, or None if a rung was interrupted (run the ladder again to go
    on). `overrides` ({section: {key: value}}, as `--set`) apply to every rung and win over the sizing. With
    `seeds`, each rung is a seed group (experiments/seeds.py): one run per seed in out_dir/<model>/seed-<seed>,
    the table's NLL their mean ± SE. The table marks the best rung and those not distinguishable from it."""
    names = list(models) if models else default_rungs()
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ConfigError(f"unknown model {unknown[0]!r}; {did_you_mean(unknown[0], REGISTRY)}choose from "
                          f"{', '.join(REGISTRY)}")
    if size not in ("auto", "default"):
        raise ConfigError(f"--size must be auto or default, got {size!r}")
    parsed = parse_budget(budget, "--budget")
    if parsed is None:
        raise ConfigError("--budget needs an amount: the ladder compares rungs at one budget")
    if parsed.is_time:
        log.warning("a time budget gives each rung the steps this machine's speed allows: the table will change "
                    "with the load; a work budget (flops, tokens) gives the same table on any machine")
    out_dir = claim_output_folder(out_dir, "a ladder", may_replace=_is_ladder_folder)
    asked = json.loads(json.dumps({"source": source, "budget": str(parsed), "size": size, "models": names,
                                   "mode": mode, "seed": seed, "overrides": overrides or {}, "seeds": seeds}))
    if (out_dir / LADDER_FILE).is_file() and not force and read_json(out_dir / LADDER_FILE, "ladder") != asked:
        raise CheckpointError(f"{out_dir} holds a ladder asked for with other options ({out_dir / LADDER_FILE}); "
                              "pass --force to train this one there")

    base = {n: rung_config(source, n, budget=budget, mode=mode, seed=seed, device=device, overrides=overrides)
            for n in names}
    resolved = {n: resolve_config(values) for n, values in base.items()}  # a bad value fails before training
    data = prepare_data(resolved[names[0]].data)  # one split and one tokenizer for every rung
    configs = {n: merge_layers(base[n], fair_size(resolved[n], data, parsed), overrides or {})
               if size == "auto" else base[n] for n in names}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / LADDER_FILE, json.dumps(asked, indent=2) + "\n")
    run_dirs = []
    for name in names:
        folder = out_dir / name
        log.info("ladder: %s, budget %s", name, parsed)
        if seeds:
            runs = train_seeds(configs[name], out=folder, seeds=seeds, force=force, inspect=False, data=data)
            if runs and runs[-1].interrupted:
                return None
            summary = summarize(folder)
        else:
            run = _train_rung(configs[name], folder, force, data)
            if run is None:
                return None
            summary = run.summary
        run_dirs.append(folder)
        if on_rung_end is not None:
            on_rung_end(name, summary)

    rows = compare_runs(run_dirs)
    mark_best(rows)
    notes = [f"compared at a budget of {parsed} a rung ({'sized for it' if size == 'auto' else 'registered sizes'})",
             *undertrained(rows, parsed)]
    atomic_write_text(out_dir / TABLE_FILE, format_table(rows) + "".join(f"{line}\n" for line in notes))
    atomic_write_text(out_dir / JSON_FILE, to_json(rows))
    plot_val_curves(rows, out_dir / PLOT_FILE, x="time" if parsed.is_time else "tokens")
    rows.notes = tuple(notes)
    return rows


def _train_rung(values: dict[str, Any], folder: Path, force: bool, data: RunData):
    """A rung's run: kept if it finished, resumed if a killed ladder left it with a checkpoint, else trained;
    None if it was interrupted now. `force` trains it again whatever the folder holds."""
    run_dir = RunDir(folder)
    if not force and (folder / SUMMARY_FILE).is_file():
        return load(folder)
    if not force and run_dir.has_checkpoint():
        run = train({}, out=folder, resume=True, inspect=False, data=data)
    else:
        run = train(values, out=folder, force=True, inspect=False, data=data)
    return None if run.trainer is not None and run.trainer.interrupted else run


def _is_ladder_folder(folder: Path) -> bool:
    """A ladder's own folder: its table, or only runs and run starts (a ladder stopped before its table)."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return (folder / LADDER_FILE).is_file() or (folder / JSON_FILE).is_file() or all(
        p.is_dir() and not p.is_symlink() and (is_run_or_its_start(p) or is_group(p)) for p in entries)


def rung_config(source: str, name: str, *, budget: str, mode: str | None = None, seed: int = 1337,
                device: str = "auto", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config values of one rung at its registered size: what `lmlab train` given the same values
    trains (byte for byte the same metrics)."""
    data_values = {"source": source} | ({"mode": mode} if mode else {})
    values = {"data": data_values, "model": {"name": name, **RUNG_MODEL_VALUES.get(name, {})},
              "train": {"budget": budget, "seed": seed, "device": device}}
    return merge_layers(values, overrides or {})


# ----------------------------------------------------------------------------------------------------------
# Fair sizing


def parameters_for(budget: Budget) -> float | None:
    """The parameters a work budget trains at TOKENS_PER_PARAMETER tokens each (None for steps and time,
    which say nothing of size)."""
    if budget.unit == "tokens":
        return budget.amount / TOKENS_PER_PARAMETER
    if budget.unit == "flops":
        return math.sqrt(budget.amount / (6 * TOKENS_PER_PARAMETER))
    return None


def fair_size(config, data: RunData, budget: Budget) -> dict[str, Any]:
    """The model and train values that size one rung for `budget`: its shape scaled so that its parameters
    come nearest (on a log scale) to parameters_for(budget), its batch halved until it takes MIN_STEPS steps,
    and the same regularisation as every other rung (no dropout; early stopping that keeps the best weights).
    A rung without width fields (bigram, counted n-gram) keeps its size and trains at most its registered
    steps. Measured on the meta device: nothing is allocated."""
    target = parameters_for(budget)
    spec = REGISTRY[config.model_name]
    if target is None or not any(p.requires_grad for p in _meta_model(config, data).parameters()):
        return {}
    if not any(isinstance(getattr(config.model, f, None), int) for f in WIDTHS):
        # fixed by the vocabulary: its batch fitted too, and as many steps as it converges in, never more
        batch = _fitted_batch(config, data, budget)
        steps = spec.train_defaults.get("max_steps", config.train.max_steps)
        sized = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=batch))
        cap = {"budget": "", "max_steps": steps} if _steps(sized, data, budget) > steps else {}
        return {"train": {"batch_size": batch, **cap}}

    def params(values: dict[str, int]) -> int:
        return count_parameters(_meta_model(dataclasses.replace(
            config, model=dataclasses.replace(config.model, **values)), data))

    best = min(_shapes(config.model), key=lambda shape: abs(math.log(params(shape) / target)))
    # Alike: no dropout anywhere (the other rungs have none); the transformers at GPT-2's weight decay, not the
    # default GPT's 0.5, which suits its 200K parameters memorising the embedded names
    regular = {"dropout": 0.0} if hasattr(config.model, "dropout") else {}
    decay = {"weight_decay": GPT2_WEIGHT_DECAY} if _is_transformer(config.model_name) else {}
    batch = _fitted_batch(dataclasses.replace(config, model=dataclasses.replace(config.model, **best)), data, budget)
    return {"model": {**best, **regular}, "train": {"batch_size": batch, "early_stopping": EARLY_STOPPING, **decay}}


def _fitted_batch(config, data: RunData, budget: Budget) -> int:
    """The rung's batch, halved (down to MIN_BATCH) until the budget buys it MIN_STEPS steps."""
    batch = config.train.batch_size
    while batch // 2 >= MIN_BATCH and _steps(dataclasses.replace(config, train=dataclasses.replace(
            config.train, batch_size=batch)), data, budget) < MIN_STEPS:
        batch //= 2
    return batch


def _shapes(model) -> list[dict[str, int]]:
    """The shapes the width rule chooses from. A transformer: widths in steps of HEAD_SIZE, one head per
    HEAD_SIZE of width and one layer per HEAD_SIZE too, between 2 and its registered depth (a narrow model
    of many layers trains worse than a wider, shallower one of as many parameters: on the embedded names at
    52K parameters, 4 layers x 32 wide reached test 1.971, 2 x 48 1.945). Other rungs: their width fields
    scaled together in quarter octaves from 1/16x to 16x."""
    if isinstance(getattr(model, "n_head", None), int):
        kv_share = (getattr(model, "n_kv_head", None) or model.n_head) / model.n_head  # grouped-query attention
        shapes = []
        for width in range(HEAD_SIZE, 64 * HEAD_SIZE + 1, HEAD_SIZE):
            heads = width // HEAD_SIZE
            shape = {"n_embd": width, "n_head": heads, "n_layer": min(model.n_layer, max(2, heads))}
            if hasattr(model, "n_kv_head"):
                kv = max(1, round(heads * kv_share))
                shape["n_kv_head"] = kv if heads % kv == 0 else heads
            shapes.append(shape)
        return shapes
    widths = {f: getattr(model, f) for f in WIDTHS if isinstance(getattr(model, f, None), int)}
    return [{f: max(1, round(w * 2 ** (k / 4))) for f, w in widths.items()} for k in range(-16, 17)]


def _meta_model(config, data: RunData) -> torch.nn.Module:
    with torch.device("meta"):
        return build_model(config, data.tokenizer, context_length(data), training=True)


def _steps(config, data: RunData, budget: Budget) -> int:
    from lmlab.run.plan import tokens_per_step
    from lmlab.training.budget import steps_for
    from lmlab.training.performance import flops_per_token

    return steps_for(budget, tokens_per_step(config, data), flops_per_token(_meta_model(config, data),
                                                                             context_length(data)))


def undertrained(rows: list[dict[str, Any]], budget: Budget) -> list[str]:
    """Lines under the table for rungs the budget did not serve: a trained rung that does not beat the counted
    bigram by MIN_GAIN nats on held-out text, and a transformer rung more than MAX_BEHIND nats behind the best
    rung (at a budget that suits them they lead). Each says what the rung saw for its size, and a budget to
    try (4x: twice the parameters on twice the tokens)."""
    scored = [r for r in rows if r["nll"][held_out_split(r)] is not None]
    counted = [r for r in scored if r["model"] == "ngram"]
    if not scored:
        return []
    floor = counted[0]["nll"][held_out_split(counted[0])] if counted else None
    best = min(scored, key=lambda r: r["nll"][held_out_split(r)])
    more = Budget(budget.amount * 4, budget.unit)
    lines = []
    for row in scored:
        nll = row["nll"][held_out_split(row)]
        seen = (f"{row['tokens']:,.0f} tokens" if row.get("tokens") else f"{row['steps']} steps") + \
            f" for {row['parameters']:,} parameters; try --budget {more}"
        if row["model"] in AT_BEST_BIGRAMS:
            continue
        if floor is not None and nll > floor - MIN_GAIN:
            lines.append(f"{Path(row['run']).name}: undertrained at this budget ({nll:.4f}, not {MIN_GAIN} below the "
                         f"counted bigram's {floor:.4f}): {seen}")
        elif _is_transformer(row["model"]) and nll > best["nll"][held_out_split(best)] + MAX_BEHIND:
            lines.append(f"{Path(row['run']).name}: {nll - best['nll'][held_out_split(best)]:.3f} behind the best "
                         f"rung ({Path(best['run']).name}) at this budget: {seen}")
    return lines


def _is_transformer(model_name: str) -> bool:
    spec = REGISTRY.get(model_name)
    return spec is not None and "n_head" in {f.name for f in dataclasses.fields(spec.config_cls)}
