"""The notes' lessons as one-command experiments: `lmlab sweep --experiment NAME` sweeps one idea on the
embedded names with several seeds, plots it and writes a reading of the result computed from its numbers
(which value won, by how much, with what p-value, and whether that is what the lesson says).

Each experiment is a sweep (experiments/sweep.py) with its own values; `scale` multiplies its steps.
docs/experiments.md shows each with its plot.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmlab.compare import difference, summarize
from lmlab.experiments.groups import parse_seeds
from lmlab.experiments.space import split_sets
from lmlab.experiments.stats import format_p
from lmlab.experiments.sweep import PLOT_FILE, SweepPlan, run_sweep
from lmlab.files import atomic_write_text
from lmlab.run.folder import RunDir

# Small models on the names, without early stopping, so every trial trains its steps (each experiment gives
# max_steps, which replaces the GPT's budget).
_MLP = {"model": {"name": "mlp"}, "train": {"early_stopping": 0}}
_GPT = {"model": {"name": "gpt", "dropout": 0.0}, "train": {"early_stopping": 0, "lr": 3e-3}}


@dataclass(frozen=True, kw_only=True, slots=True)
class Experiment:
    name: str
    lesson: str  # what the notes claim; the reading says whether the numbers agree
    base: dict[str, Any]  # config layers of every trial
    sets: tuple[str, ...]  # the swept values, as --set spells them
    steps: int  # train.max_steps at scale 1 (with equal tokens: at the base batch)
    equal: str = "steps"
    expect: Callable[[list[dict[str, Any]]], bool | None] | None = field(default=None)


def _key(exp: Experiment) -> str:
    return exp.sets[0].partition("=")[0]


def _smallest_best(rows: list[dict[str, Any]]) -> bool:
    """The lesson holds when the smallest value tried beats the largest one."""
    return min(rows, key=lambda r: r["value"])["mean"] < max(rows, key=lambda r: r["value"])["mean"]


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment(
        name="batch-size", lesson="a smaller batch_size with more steps can beat a bigger batch_size with fewer "
        "updates, at the same number of examples seen",
        base={**_MLP, "train": {**_MLP["train"], "batch_size": 64, "warmup_steps": 0}},
        sets=("train.batch_size=16,64,256",), steps=500, equal="tokens", expect=_smallest_best),
    Experiment(
        name="lr", lesson="too low a learning rate learns slowly, too high a one is unstable: the loss against "
        "the rate is a valley", base=_MLP, sets=("train.lr=1e-3,3e-3,1e-2,3e-2,1e-1",), steps=500,
        expect=lambda rows: rows[0]["value"] not in (min(r["value"] for r in rows), max(r["value"] for r in rows))),
    Experiment(
        name="init-scale", lesson="an output layer initialised small (nearly uniform first predictions) starts "
        "at log(vocab) instead of far above it, and trains better in a short run", base=_MLP,
        sets=("model.output_scale=1.0,0.1,0.01",), steps=300,
        expect=lambda rows: rows[0]["value"] != 1.0),
    Experiment(
        name="norm", lesson="normalisation (batch or layer norm) lets a deeper MLP train without hand-tuned init "
        "gains", base={**_MLP, "model": {"name": "mlp", "n_layer": 4}},
        sets=("model.norm=none,batch,layer",), steps=500, expect=lambda rows: rows[0]["value"] != "none"),
    Experiment(
        name="dropout", lesson="dropout (an ensemble of thinned networks) narrows the gap between train and val "
        "loss", base={**_MLP, "model": {"name": "mlp", "n_hidden": 400}},
        sets=("model.dropout=0.0,0.2,0.5",), steps=1000),
    Experiment(
        name="attention-scaling", lesson="scaling the attention scores by 1/sqrt(head size) before the softmax "
        "matters: unscaled scores saturate it", base={**_GPT, "model": {**_GPT["model"], "n_layer": 2,
                                                                            "n_head": 1, "n_embd": 64}},
        sets=("model.attn_scale=true,false",), steps=300, expect=lambda rows: rows[0]["value"] is True),
    Experiment(
        name="residual", lesson="residual connections are a gradient highway: a deep stack trains with them and "
        "struggles without", base={**_GPT, "model": {**_GPT["model"], "n_layer": 6, "n_head": 2, "n_embd": 32}},
        sets=("model.residual=true,false",), steps=300, expect=lambda rows: rows[0]["value"] is True),
    Experiment(
        name="scaling", lesson="at a fixed number of tokens, the loss falls as a power of the parameter count",
        base={**_GPT, "model": {**_GPT["model"], "n_layer": 2, "n_head": 2}},
        sets=("model.n_embd=16,32,64,96",), steps=300),
]}


def run_experiment(name: str, out: str | Path, *, data: str = "names", seeds: str | None = None,
                   scale: float = 1.0, workers: int = 1, force: bool = False,
                   on_trial_end: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the named experiment in `out`; return its table, plot and reading."""
    from lmlab.errors import ConfigError
    from lmlab.run.config import merge_layers

    if not scale > 0:
        raise ConfigError(f"--scale must be positive, got {scale}")
    exp = EXPERIMENTS[name]
    base = merge_layers(exp.base, {"data": {"source": data}, "train": {"max_steps": max(1, round(exp.steps * scale))}})
    model_name = base["model"]["name"]
    axes, _ = split_sets(list(exp.sets), model_name)
    plan = SweepPlan(base=base, axes=tuple(axes), seeds=tuple(parse_seeds(seeds or "3", 1337)), equal=exp.equal)
    report = run_sweep(plan, out, workers=workers, force=force, on_trial_end=on_trial_end)
    out = Path(out)
    rows = _value_rows(out, report["rows"], _key(exp))
    plot = out / PLOT_FILE
    if name == "scaling":
        from lmlab.experiments.scaling import fit_and_plot

        fit = fit_and_plot(out, report["rows"], plan)
        reading = reading_of(exp, rows, plan) + " " + fit["reading"]
        plot = fit["plot"]
    else:
        reading = reading_of(exp, rows, plan)
    atomic_write_text(out / "reading.txt", reading + "\n")
    return {"table": report["table"], "reading": reading, "plot": plot, "rows": rows}


def _value_rows(out: Path, rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """The finished trials, best first, each with its swept value, its summary row and train/val gap."""
    found = []
    for row in rows:
        if row["metric"] is None:
            continue
        summary = summarize(out / row["folder"])
        gap = None if summary["nll"]["train"] is None else summary["nll"]["val"] - summary["nll"]["train"]
        found.append({"value": row["params"][key], "mean": row["metric"].mean, "se": row["metric"].se,
                      "summary": summary, "gap": gap, "steps": summary["steps"], "p_vs_best": row["p_vs_best"]})
    return found


def _fmt(mean: float, se: float | None) -> str:
    return f"{mean:.3f}" + ("" if se is None else f" ± {se:.3f}")


def reading_of(exp: Experiment, rows: list[dict[str, Any]], plan: SweepPlan) -> str:
    """One paragraph from the numbers: each value's result, the best against the worst with its p-value, and
    whether the lesson's direction holds; never a fixed sentence."""
    key = _key(exp)
    if len(rows) < 2:
        return f"{exp.name}: fewer than two trials finished; nothing to compare."
    best, worst = rows[0], rows[-1]
    diff = difference(worst["summary"], best["summary"], "val")
    seeds = len(plan.seeds)
    budget = {"tokens": "at equal examples seen", "steps": "at equal steps", "time": "at equal time"}[plan.equal]
    parts = [f"{exp.name} ({budget}, {seeds} seed{'s' if seeds > 1 else ''} each, val NLL in nats/token): "
             + ", ".join(f"{key.split('.')[-1]}={r['value']} {_fmt(r['mean'], r['se'])}"
                         + (f" after {int(r['steps']):,} steps" if plan.equal != "steps" else "")
                         for r in sorted(rows, key=lambda r: str(r["value"]) if isinstance(r["value"], str)
                                         else r["value"]))
             + "."]
    verdict = "significant" if diff.significant else "not significant: more seeds or steps would be needed to tell"
    parts.append(f"The best, {key.split('.')[-1]}={best['value']}, beat the worst, {worst['value']}, by "
                 f"{diff.delta:.3f} ± {diff.se:.3f} (p {format_p(diff.p_value)}, {diff.method}): {verdict}.")
    tied = [r for r in rows[1:] if r["p_vs_best"] is not None and r["p_vs_best"] >= 0.05]
    if tied:
        parts.append("Not distinguishable from the best: " + ", ".join(str(r["value"]) for r in tied) + ".")
    if exp.name == "dropout" and all(r["gap"] is not None for r in rows):
        gaps = sorted(rows, key=lambda r: r["value"])
        parts.append("Val minus train gap: " + ", ".join(f"{r['value']}: {r['gap']:+.3f}" for r in gaps) + "; "
                     + ("it narrows as dropout grows." if gaps[-1]["gap"] < gaps[0]["gap"] else
                        "it does not narrow here (the model does not overfit in this run)."))
    if exp.name == "init-scale":
        first = {}
        for r in rows:
            path = Path(r["summary"]["run"]) / f"seed-{plan.seeds[0]}" / "metrics.jsonl"
            losses = [record["loss"] for record in RunDir(path.parent).read_metrics() if "loss" in record]
            if losses:
                first[r["value"]] = losses[0]
        vocab = _vocab_size(Path(rows[0]["summary"]["run"]) / f"seed-{plan.seeds[0]}")
        if first and vocab:
            parts.append("First logged training loss: " + ", ".join(f"{v}: {loss:.2f}" for v, loss in
                                                                     sorted(first.items())) +
                         f" (uniform guessing: log({vocab}) = {math.log(vocab):.2f}).")
    if exp.expect is not None and diff.significant:
        holds = exp.expect(rows)
        parts.append(f"The lesson (\"{exp.lesson}\") {'holds' if holds else 'does not hold'} in this run.")
    elif exp.expect is not None:
        parts.append(f"So this run neither confirms nor refutes the lesson (\"{exp.lesson}\").")
    return " ".join(parts)


def _vocab_size(run_dir: Path) -> int | None:
    from lmlab.run.folder import load_run

    try:
        return load_run(run_dir).tokenizer.vocab_size
    except Exception:  # noqa: BLE001 -- only a detail of the reading
        return None
