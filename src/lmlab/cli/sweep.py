"""`lmlab sweep`: train one config over lists or ranges of values (or a named experiment), on Optuna."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmlab.cli.common import add_data_model_args, cli_layers
from lmlab.experiments.groups import parse_seeds
from lmlab.names import DEFAULT_MODEL, did_you_mean


def cmd_sweep(args: argparse.Namespace) -> int:
    """Sweep config values by grid, random or TPE search (Optuna), minimising val NLL. Each --set KEY=A,B,C (a
    list) or KEY=LOW:HIGH[:log] (a range) is swept, each trial trained once per seed; prints the table
    (mean ± SE over seeds, the best row and those not distinguishable from it marked) and writes it, a plot
    of the metric against each value, the best config (best.toml, for lmlab train --config) and, for random
    and TPE, Optuna's parameter importances. The study lives in OUT/study.db (or --storage URL): the same
    command run again resumes a stopped sweep; several --workers (or machines on one --storage) share it."""
    from lmlab.errors import ConfigError
    from lmlab.experiments.named import EXPERIMENTS, run_experiment
    from lmlab.experiments.space import split_sets
    from lmlab.experiments.sweep import BEST_FILE, PLOT_FILE, TABLE_FILE, SweepPlan, run_sweep
    from lmlab.run.config import merge_layers, resolve_config

    out = Path(args.out or (f"runs/{args.experiment}" if args.experiment else "runs/sweep"))

    def on_trial_end(record: dict) -> None:
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record["params"].items())
        print(f"{record['folder']}: {values}: {record['value']:.4f}", file=sys.stderr, flush=True)

    if args.experiment:
        if args.experiment not in EXPERIMENTS:
            raise ConfigError(f"unknown --experiment {args.experiment!r}; {did_you_mean(args.experiment, EXPERIMENTS)}"
                              f"choose from {', '.join(EXPERIMENTS)}")
        result = run_experiment(args.experiment, out, data=args.data or "names", seeds=args.seeds,
                                scale=args.scale, workers=args.workers, force=args.force, on_trial_end=on_trial_end)
        print(result["table"], end="")
        print(f"\n{result['reading']}\n")
        print(f"table: {out / TABLE_FILE}; plot: {result['plot']}")
        return 0
    pre = merge_layers(*cli_layers(argparse.Namespace(**{**vars(args), "set": []})))
    model_name = (pre.get("model") or {}).get("name") or DEFAULT_MODEL
    axes, fixed = split_sets(args.set, model_name)
    base = merge_layers(*cli_layers(argparse.Namespace(**{**vars(args), "set": fixed})))
    seeds = parse_seeds(args.seeds or "1", resolve_config(base).train.seed)
    plan = SweepPlan(base=base, axes=tuple(axes), search=args.search, trials=args.trials or 0, seeds=tuple(seeds),
                     metric=args.metric, equal=args.equal, grid_points=args.grid_points,
                     sampler_seed=args.sampler_seed)
    if plan.equal == "time":
        print("warning: a time budget gives each trial the steps this machine's speed allows, so trials are not "
              "reproducible and their differences mix in the load; a work budget (--budget ...tokens) is",
              file=sys.stderr)
    report = run_sweep(plan, out, storage=args.storage, workers=args.workers, force=args.force,
                       on_trial_end=on_trial_end)
    print(report["table"], end="")
    print(f"table: {out / TABLE_FILE}; plot: {out / PLOT_FILE}; best config: {out / BEST_FILE}")
    return 0


def sweep_args(p: argparse.ArgumentParser) -> None:
    add_data_model_args(p)
    p.add_argument("--out", metavar="DIR", help="the sweep folder (default: runs/sweep, or runs/EXPERIMENT)")
    p.add_argument("--search", choices=["grid", "random", "tpe"], default="grid",
                   help="grid: every combination; random or tpe (Optuna's TPE): --trials N draws (default: grid)")
    p.add_argument("--trials", type=int, metavar="N", help="trials of a random or TPE search")
    p.add_argument("--seeds", metavar="N|A,B,...",
                   help="runs per trial differing only in train.seed (default: 1; an --experiment: 3)")
    p.add_argument("--metric", choices=["val_nll", "test_nll", "val_bpb", "test_bpb"], default="val_nll",
                   help="what the search minimises (default: val_nll)")
    p.add_argument("--equal", choices=["steps", "tokens", "time"], default="steps",
                   help="what every trial gets the same of when the batch size varies: steps, tokens (max_steps x "
                   "batch_size of the fixed options, so a smaller batch trains more steps) or time (--budget Ns; "
                   "not reproducible). A work budget (--budget, or the GPT rungs' default) gives every trial the "
                   "same work whatever it varies")
    p.add_argument("--grid-points", type=int, default=4, metavar="K", help="values of each range in a grid "
                   "(default: 4)")
    p.add_argument("--sampler-seed", type=int, default=0, help="seed of the random/TPE search (default: 0)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage (default: sqlite:///OUT/study.db); a "
                   "postgresql:// or mysql:// URL lets processes on several machines share the study")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes on this machine, one "
                   "thread each (default: 1)")
    p.add_argument("--force", action="store_true", help="start over in an --out that holds another sweep")
    p.add_argument("--experiment", metavar="NAME", help="a named experiment on the embedded data (batch-size, "
                   "lr, init-scale, attention-scaling, residual, norm, dropout, scaling): its own values, plot "
                   "and a reading of the result; docs/experiments.md")
    p.add_argument("--scale", type=float, default=1.0, metavar="F", help="--experiment: multiply its training "
                   "steps by F (default 1: a few minutes on 2 cores)")
