"""The ladder on names.txt: every registered rung, each within a time budget, on one shared split.

Expected order (REFERENCES.md): the counted bigram worst (test NLL ~2.45), the MLP ~2.1-2.2, WaveNet ~2.0,
the recurrent models and the GPT best. Writes runs, comparison.txt/.json and val_curves.png into --out and
prints the table with the machine and date, for benchmarks/RESULTS.md.

    python benchmarks/ladder_names.py --budget 120 --threads 1
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
from pathlib import Path

import torch

from lmlab.compare import format_table
from lmlab.ladder import run_ladder

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "names.txt"))
    parser.add_argument("--budget", type=float, default=120.0, help="seconds of training per rung")
    parser.add_argument("--out", default=str(REPO / "runs" / "ladder-names"))
    parser.add_argument("--models", help="comma-separated rungs (default: all registered)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice); "
                        "1 is much faster for these small models on a shared, busy machine")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    models = args.models.split(",") if args.models else None

    def on_rung_end(name: str, summary: dict) -> None:
        print(f"{name}: test {summary['nll'].get('test', float('nan')):.4f} after {summary['steps']} steps "
              f"({summary['train_seconds']:.0f} s)", flush=True)

    rows = run_ladder(args.data, args.out, budget=args.budget, models=models, device="cpu", force=True,
                      on_rung_end=on_rung_end)
    print(f"\n{platform.node()} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
          f"threads), torch {torch.__version__}, {datetime.date.today()}; budget {args.budget:g} s per rung; "
          f"split 80/10/10, data.split_seed 1337\n")
    print(format_table(rows), end="")
    ordered = sorted(rows, key=lambda r: r["nll"]["test"])
    print(f"best: {ordered[0]['model']}, worst: {ordered[-1]['model']}")


if __name__ == "__main__":
    main()
