"""Forecasting benchmark: every forecaster on the course's synthetic series (split at 1000) beside the
baselines of REFERENCES.md. Target: linear at or below the differenced moving-average baseline's MAE (5.839).

    PYTHONPATH=src python benchmarks/forecast_synthetic.py [--models linear mlp conv_lstm] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import date

import torch

from lmlab.series.forecast import run_forecast


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["linear", "mlp", "conv_lstm"])
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.node()} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"{args.threads} thread(s), {date.today()}")
    baselines_done = False
    for name in args.models:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            result = run_forecast("synthetic", name, window=args.window, out=out)
        seconds = time.perf_counter() - started
        if not baselines_done:
            for baseline, score in list(result.scores.items())[1:]:
                print(f"{baseline:<42} MAE {score['mae']:.3f}  MSE {score['mse']:.2f}")
            baselines_done = True
        score = result.scores[name]
        print(f"{name + f' (window {args.window}, {result.steps} steps)':<42} MAE {score['mae']:.3f}  "
              f"MSE {score['mse']:.2f}  ({seconds:.1f} s)")


if __name__ == "__main__":
    main()
