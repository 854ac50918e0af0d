"""The scaling view of a sweep over model sizes: val loss against parameters (and against training compute,
6 x parameters x tokens seen) fitted as a power law, log L = log a - alpha log N, by least squares over every
seed's point, with the exponent's standard error from the fit's residuals.

A pure power law leaves out the irreducible loss a larger study would fit as an offset; over the few small
sizes a CPU trains in minutes the offset cannot be told from the exponent, so the fit says how steeply loss
fell here, not where it would level off.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lmlab.compare import summarize
from lmlab.errors import LmlabError
from lmlab.experiments.groups import group_members
from lmlab.files import atomic_write, parse_json


def power_law(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least-squares fit of log y = intercept - alpha log x: {"alpha", "alpha_se", "a"}."""
    import numpy as np

    lx, ly = np.log(np.asarray(xs, dtype=float)), np.log(np.asarray(ys, dtype=float))
    design = np.stack([np.ones_like(lx), lx], axis=1)
    coef, *_ = np.linalg.lstsq(design, ly, rcond=None)
    residual = ly - design @ coef
    dof = max(len(lx) - 2, 1)
    covariance = float(residual @ residual) / dof * np.linalg.inv(design.T @ design)
    return {"alpha": float(-coef[1]), "alpha_se": float(math.sqrt(covariance[1, 1])), "a": float(math.exp(coef[0]))}


def _tokens_seen(run_dir: Path) -> int | None:
    path = run_dir / "metrics.jsonl"
    seen = None
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            record = parse_json(line, path) if line.strip() else {}
        except LmlabError:  # a line cut short by a kill
            continue
        if isinstance(record, dict) and isinstance(record.get("tokens"), int):
            seen = record["tokens"]
    return seen


def fit_and_plot(out: Path, rows: list[dict[str, Any]], plan) -> dict[str, Any]:
    """Fit the finished trials of `out` and write scaling.png; return the fits, the plot and a reading."""
    points = []  # (parameters, compute, val NLL) per seed run
    for row in rows:
        if row["metric"] is None:
            continue
        for member in group_members(out / row["folder"]):
            summary = summarize(member.path)
            tokens = _tokens_seen(member.path)
            if summary["nll"]["val"] is not None and summary["parameters"]:
                points.append((summary["parameters"], 6 * summary["parameters"] * (tokens or 0), summary["nll"]["val"]))
    if len({p[0] for p in points}) < 3:
        return {"reading": "Too few model sizes finished to fit a power law (three are needed).", "plot": None}
    by_params = power_law([p[0] for p in points], [p[2] for p in points])
    with_compute = [p for p in points if p[1]]
    by_compute = power_law([p[1] for p in with_compute], [p[2] for p in with_compute]) if len(
        {p[1] for p in with_compute}) >= 3 else None
    plot = _plot(out / "scaling.png", points, by_params, by_compute)
    reading = (f"Fitted over {len({p[0] for p in points})} sizes ({len(points)} runs): val NLL ~ N^-alpha with alpha = "
               f"{by_params['alpha']:.3f} ± {by_params['alpha_se']:.3f} against parameters N")
    if by_compute:
        reading += f", and {by_compute['alpha']:.3f} ± {by_compute['alpha_se']:.3f} against compute C = 6 N D"
    trend = "fell" if by_params["alpha"] > 0 else "did not fall"
    significant = abs(by_params["alpha"]) > 2 * by_params["alpha_se"]
    reading += (f": the loss {trend} with size" + ("" if significant else " (the exponent is within two standard "
                                                   "errors of zero)") + ".")
    return {"reading": reading, "plot": plot, "by_parameters": by_params, "by_compute": by_compute}


def _plot(path: Path, points, by_params, by_compute) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [("parameters N", 0, by_params)] + ([("compute C = 6 N D (FLOPs)", 1, by_compute)] if by_compute else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    try:
        for ax, (label, index, fit) in zip(axes[0], panels, strict=True):
            xs = np.array([p[index] for p in points], dtype=float)
            ys = np.array([p[2] for p in points])
            ax.scatter(xs, ys, color="C0", s=14, label="runs (each seed)")
            line = np.geomspace(xs.min(), xs.max(), 50)
            ax.plot(line, fit["a"] * line ** -fit["alpha"], color="C1",
                    label=f"fit: alpha = {fit['alpha']:.3f} ± {fit['alpha_se']:.3f}")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel("val NLL (nats/token)")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize="small")
        fig.tight_layout()
        atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)
    return path
