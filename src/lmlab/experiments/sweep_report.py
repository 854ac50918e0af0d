"""What a finished sweep shows: the table of its trials sorted by the metric (mean ± SE over seeds, the best
row marked `*`, the rows that cannot be told apart from it `~`), the metric against each swept value, the
best trial's config as TOML, and Optuna's parameter importances (not for a grid: its points were not
chosen by the search).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from lmlab.compare import difference, summarize
from lmlab.errors import LmlabError
from lmlab.experiments.stats import mean_se
from lmlab.experiments.sweep import (
    BEST_FILE,
    JSON_FILE,
    METRICS,
    PLOT_FILE,
    TABLE_FILE,
    SweepPlan,
    trial_config,
)
from lmlab.files import atomic_write, atomic_write_text

log = logging.getLogger(__name__)


def trial_rows(out: Path, study, plan: SweepPlan) -> list[dict[str, Any]]:
    """One row per trial folder that finished (a retried trial once), and one per trial that failed with an
    error; sorted by the metric's mean, failures last."""
    from optuna.trial import TrialState

    rows: dict[str, dict[str, Any]] = {}
    for trial in study.get_trials(deepcopy=False):
        folder = trial.user_attrs.get("folder")
        if folder is None:
            continue
        if trial.state == TrialState.COMPLETE:
            per_seed = trial.user_attrs.get("per_seed", [trial.value])
            rows[folder] = {"folder": folder, "trial": trial.number, "params": dict(trial.params),
                            "metric": mean_se(per_seed), "per_seed": per_seed, "error": None,
                            "val_bpb": trial.user_attrs.get("val_bpb")}
        elif trial.state == TrialState.FAIL and "error" in trial.user_attrs and folder not in rows:
            rows[folder] = {"folder": folder, "trial": trial.number, "params": dict(trial.params), "metric": None,
                            "per_seed": [], "error": trial.user_attrs["error"], "val_bpb": None}
    ordered = sorted(rows.values(), key=lambda r: (r["metric"] is None, r["metric"].mean if r["metric"] else 0,
                                                   json.dumps(r["params"], sort_keys=True)))
    _mark_best(out, ordered, plan)
    return ordered


def _mark_best(out: Path, rows: list[dict[str, Any]], plan: SweepPlan) -> None:
    """mark: "*" the best, "~" not distinguishable from it (p >= 0.05, compare's pairing: by seed, or by
    evaluation unit for one seed), "" a worse row. The test is on NLL of the metric's split."""
    finished = [r for r in rows if r["metric"] is not None]
    for row in rows:
        row["mark"], row["p_vs_best"] = "", None
    if not finished:
        return
    best = finished[0]
    best["mark"] = "*"
    split = METRICS[plan.metric][1]
    best_summary = summarize(out / best["folder"])
    for row in finished[1:]:
        try:
            diff = difference(summarize(out / row["folder"]), best_summary, split)
        except (LmlabError, ValueError) as err:
            log.warning("%s: not compared with the best trial: %s", row["folder"], err)
            continue
        row["p_vs_best"] = diff.p_value
        row["mark"] = "" if diff.significant else "~"


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_sweep_table(rows: list[dict[str, Any]], plan: SweepPlan) -> str:
    keys = [a.key for a in plan.axes]
    header = ["", *keys, f"{plan.metric} (mean±SE)", "p vs best", "val bits/byte", "seeds"]
    body = []
    for row in rows:
        metric = row["metric"].format() if row["metric"] else f"failed: {row['error']}"
        p = row["p_vs_best"]
        body.append([row["mark"], *(_value(row["params"].get(k, "-")) for k in keys), metric,
                     "-" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}"),
                     "-" if row.get("val_bpb") is None else f"{row['val_bpb']:.4f}", str(len(row["per_seed"]))])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    seeds = len(plan.seeds)
    how = "paired by seed" if seeds > 1 else \
        "paired by evaluation unit (one seed: the SE does not cover training noise)"
    return "\n".join(lines) + (f"\n\n* best; ~ not distinguishable from it (p >= 0.05, {how}). {plan.metric} is "
                               f"minimised; {seeds} seed(s) a trial; equal {plan.equal}.\n")


def plot_sweep(rows: list[dict[str, Any]], plan: SweepPlan, path: Path) -> Path:
    """One panel per swept key: the metric's mean ± SE at each value (the trials' other values pooled into
    separate points), each seed as a faint dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finished = [r for r in rows if r["metric"] is not None]
    fig, axes = plt.subplots(1, len(plan.axes), figsize=(4.5 * len(plan.axes), 3.8), squeeze=False)
    try:
        for ax, axis in zip(axes[0], plan.axes, strict=True):
            values = [r["params"][axis.key] for r in finished]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            positions = values if numeric else [list(dict.fromkeys(map(str, values))).index(str(v)) for v in values]
            for x, row in zip(positions, finished, strict=True):
                ax.scatter([x] * len(row["per_seed"]), row["per_seed"], color="gray", alpha=0.4, s=10)
                se = row["metric"].se or 0.0
                ax.errorbar([x], [row["metric"].mean], yerr=[se], fmt="o", color="C1" if row["mark"] == "*" else "C0",
                            capsize=3)
            if numeric and (axis.log or (min(values) > 0 and max(values) / min(values) >= 8)):
                ax.set_xscale("log")
                ticks = sorted(set(values))
                ax.set_xticks(ticks, [_value(v) for v in ticks])
                ax.minorticks_off()
            if not numeric:
                labels = list(dict.fromkeys(map(str, values)))
                ax.set_xticks(range(len(labels)), labels)
            ax.set_xlabel(axis.key)
            ax.set_ylabel(plan.metric)
            ax.grid(alpha=0.3)
        fig.suptitle(f"mean ± SE over {len(plan.seeds)} seed(s); orange: best", fontsize="medium")
        fig.tight_layout()
        atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)
    return path


def to_toml(layers: dict[str, dict[str, Any]]) -> str:
    """{section: {key: value}} as TOML (lmlab's configs hold numbers, strings and booleans; None is left out)."""
    lines = []
    for section in ("data", "model", "train"):
        values = {k: v for k, v in layers.get(section, {}).items() if v is not None}
        if not values:
            continue
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (int, float)):
                text = repr(value) if not isinstance(value, float) or math.isfinite(value) else "nan"
            else:
                text = json.dumps(str(value))
            lines.append(f"{key} = {text}")
        lines.append("")
    return "\n".join(lines)


def importances(study, plan: SweepPlan) -> dict[str, float] | None:
    """Optuna's parameter importances (fANOVA) for a random or TPE search with two or more finished trials."""
    from optuna.trial import TrialState

    if plan.search == "grid" or len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return None
    import optuna

    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError) as err:  # e.g. every finished trial has the same values
        log.warning("no parameter importances: %s", err)
        return None


def write_report(out: Path, study, plan: SweepPlan) -> dict[str, Any]:
    rows = trial_rows(out, study, plan)
    table = format_sweep_table(rows, plan)
    found = importances(study, plan)
    if found:
        table += "parameter importances (Optuna, fANOVA): " + ", ".join(f"{k} {v:.2f}" for k, v in found.items()) + "\n"
    atomic_write_text(out / TABLE_FILE, table)
    best = next((r for r in rows if r["metric"] is not None), None)
    if best is not None:
        config = trial_config(plan, best["params"])
        config = {**config, "train": {**config.get("train", {}), "seed": plan.seeds[0]}}
        atomic_write_text(out / BEST_FILE, f"# The best trial of {out} ({best['folder']}): {plan.metric} "
                          f"{best['metric'].format()}\n" + to_toml(config))
        plot_sweep(rows, plan, out / PLOT_FILE)
    records = [{**{k: v for k, v in r.items() if k != "metric"},
                "mean": r["metric"].mean if r["metric"] else None, "se": r["metric"].se if r["metric"] else None}
               for r in rows]
    atomic_write_text(out / JSON_FILE, json.dumps({"plan": plan.to_dict(), "rows": records, "importances": found},
                                                  indent=1) + "\n")
    return {"rows": rows, "table": table, "importances": found, "best": best}
