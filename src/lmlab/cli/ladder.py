"""`lmlab ladder`: train one model per rung on the same data and compare them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lmlab.cli.common import fmt
from lmlab.config import BUDGET_HELP, LADDER_BUDGET, parse_set_args
from lmlab.data.sources import EMBEDDED
from lmlab.experiments.groups import group_members, parse_seeds
from lmlab.names import LADDER_RUNGS


def cmd_ladder(args: argparse.Namespace) -> int:
    """Train every rung (counted bigram to the largest model) on one data set for one budget of work each,
    sized for it, then write the comparison table and validation curves into one folder. Run again after an
    interruption, it keeps the finished rungs and resumes the interrupted one."""
    from lmlab.compare import format_table
    from lmlab.ladder import JSON_FILE, PLOT_FILE, TABLE_FILE, run_ladder

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    out = Path(args.out)

    def on_rung_end(name: str, summary: dict[str, Any]) -> None:
        nll = summary["nll"]
        print(f"{name}: val {fmt(nll.get('val'))}  test {fmt(nll.get('test'))} after {summary['steps']} steps "
              f"({summary['train_seconds']:.0f} s)", file=sys.stderr, flush=True)

    rows = run_ladder(args.data, out, budget=args.budget, size=args.size, models=models, mode=args.mode,
                      seed=args.seed, device=args.device, force=args.force, overrides=parse_set_args(args.set),
                      on_rung_end=on_rung_end, seeds=parse_seeds(args.seeds, args.seed) if args.seeds else None)
    if rows is None:
        print(f"interrupted; run the same command again to go on (finished rungs are kept, the interrupted one "
              f"resumes): {out}", file=sys.stderr)
        return 130
    print(format_table(rows), end="")
    print("".join(f"{line}\n" for line in rows.notes), end="")
    print(f"table: {out / TABLE_FILE}, {out / JSON_FILE}; plot: {out / PLOT_FILE}")
    if args.tensorboard:
        from lmlab.training.loggers.tensorboard import write_tensorboard_runs

        write_tensorboard_runs([m.path for row in rows for m in group_members(row["run"])], args.tensorboard)
        print(f"tensorboard --logdir {args.tensorboard}")
    return 0


def ladder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="SRC", default="names",
                   help=f"embedded set ({', '.join(EMBEDDED)}), a text file or a folder (default: names)")
    p.add_argument("--mode", choices=["lines", "stream"], help="one example per line, or one long stream")
    p.add_argument("--budget", default=LADDER_BUDGET, metavar="AMOUNT",
                   help=f"the work each rung trains for: {BUDGET_HELP}. Work gives the same table on any machine; "
                   f"time depends on the load (default: {LADDER_BUDGET}, about 4 minutes for the default rungs on "
                   "the embedded names on 2 idle cores)")
    p.add_argument("--size", choices=["auto", "default"], default="auto", help="auto: each rung's width fitted "
                   "to the budget (its parameters trained on 20 tokens each) and its batch to at least 1,000 "
                   "steps; default: the registered sizes (default: auto)")
    p.add_argument("--out", metavar="DIR", default="runs/ladder", help="folder for the runs, table and plot "
                   "(default: runs/ladder)")
    p.add_argument("--models", metavar="A,B,...", help="rungs to train (default: one per architecture: "
                   f"{', '.join(LADDER_RUNGS)})")
    p.add_argument("--seed", type=int, default=1337, help="seed for every rung (default: 1337)")
    p.add_argument("--seeds", metavar="N|A,B,...", help="train each rung N times, differing only in train.seed "
                   "(counting up from --seed), or with the seeds listed; the table shows mean ± SE")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to train")
    p.add_argument("--force", action="store_true", help="train every rung again, overwriting runs already in "
                   "--out (without it, a rerun keeps finished rungs and resumes an interrupted one)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config value for every rung, e.g. --set train.threads=1 --set data.block_size=64")
    p.add_argument("--tensorboard", metavar="DIR", help="also write one TensorBoard folder with a run per rung")
