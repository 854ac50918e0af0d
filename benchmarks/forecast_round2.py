"""Forecasting, round 2 (issue 19): each forecaster with `lmlab forecast`'s defaults (seasonal differencing at
the detected or given period, LR range test, early stopping on validation, Huber loss) beside every baseline,
on the course's synthetic series and on two real series bundled with statsmodels (`pip install statsmodels`):
Mauna Loa CO2 (weekly 1958-2001, averaged to 526 months, gaps interpolated) and yearly sunspot activity
(1700-2008, 309 years). Target: synthetic linear MAE <= 4.50 (best baseline 4.569); on the real series the
model at or below the best baseline.

    PYTHONPATH=src python benchmarks/forecast_round2.py [--models linear mlp conv_lstm] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from lmlab.series.forecast import run_forecast


def write_real_series(folder: Path) -> dict[str, str]:
    """The two statsmodels series as CSV files; {name: FILE.csv:COLUMN}."""
    from statsmodels.datasets import co2, sunspots

    monthly = co2.load_pandas().data["co2"].resample("MS").mean().interpolate()
    (folder / "co2.csv").write_text("month,co2\n" + "".join(
        f"{when.strftime('%Y-%m')},{value:.3f}\n" for when, value in monthly.items()))
    years = sunspots.load_pandas().data
    (folder / "sunspots.csv").write_text("year,sunactivity\n" + "".join(
        f"{int(y)},{v}\n" for y, v in zip(years["YEAR"], years["SUNACTIVITY"], strict=True)))
    return {"statsmodels co2 (monthly)": f"{folder / 'co2.csv'}:co2",
            "statsmodels sunspots (yearly)": f"{folder / 'sunspots.csv'}:sunactivity"}


def report(label: str, source: str, model: str, **kwargs) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = run_forecast(source, model, out=out, **kwargs)
    seconds = time.perf_counter() - started
    baselines = {k: v["mae"] for k, v in result.scores.items() if k != model}
    best = min(baselines, key=baselines.get)
    diff = (f"diff {result.difference.period}/{result.difference.smooth}" if result.difference
            else "no diff")
    mae = result.scores[model]["mae"]
    print(f"| {label} | {model} ({diff}, lr {result.lr:.3g}, best step {result.best_step}, {result.steps} steps) "
          f"| **{mae:.3f}** | {best} {baselines[best]:.3f} | "
          + ", ".join(f"{k} {v:.3f}" for k, v in baselines.items() if k != best) + f" | {seconds:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["linear", "mlp", "conv_lstm"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, {args.threads} thread(s), "
          f"load {Path('/proc/loadavg').read_text().split()[0]}")
    print("| series | model | model MAE | best baseline MAE | other baselines | seconds |\n|---|---|---|---|---|---|")
    for model in args.models:
        report("synthetic", "synthetic", model)
    report("synthetic (ablation: no differencing)", "synthetic", "linear", difference="none")
    with tempfile.TemporaryDirectory() as folder:
        try:
            sources = write_real_series(Path(folder))
        except ImportError:
            print("statsmodels is not installed: skipping the real series")
            return
        for label, source in sources.items():
            for model in args.models:
                report(label, source, model)


if __name__ == "__main__":
    main()
